//! The deployment files in `deploy/` (issue #14): parsed and checked for
//! what makes them work (this machine has no Docker daemon or Kubernetes API
//! server to run them): node ids and addresses agree with the member list,
//! every config they pass parses and validates, the image runs unprivileged,
//! the StatefulSet's Service is headless, probes use the health service, and
//! the disruption budget keeps a quorum.
use serde::Deserialize;
use serde_yaml::Value;
use silo::config::Config;

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn str_of<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_str().unwrap_or_else(|| panic!("{path:?} is not a string in {v:?}"))
}

/// A node's config as the deployment assembles it: the shared file plus the
/// per-node settings the environment or flags give.
fn node_config(shared: &str, node_id: u64, advertise: &str) -> Config {
    let mut c = Config::from_toml(shared).expect("the shared config parses");
    c.node_id = node_id;
    c.advertise = Some(advertise.to_string());
    c.listen = "0.0.0.0:7450".into();
    c.metrics.listen = "0.0.0.0:9464".into();
    c.webui.listen = "0.0.0.0:7460".into();
    c.validate().unwrap_or_else(|e| panic!("node {node_id}: {e}"));
    c
}

#[test]
fn dockerfile_is_multi_stage_and_runs_unprivileged() {
    let d = repo_file("deploy/Dockerfile");
    let froms = d.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "a build stage and a runtime stage");
    let user = d.lines().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with("0"), "runs as {user}");
    assert!(d.contains("STOPSIGNAL SIGTERM"), "graceful shutdown on SIGTERM");
    for env in ["SILO_DATA_DIR", "SILO_LISTEN", "SILO_METRICS_LISTEN", "SILO_WEBUI_LISTEN"] {
        assert!(d.contains(env), "{env} is set for a container (no loopback-only listeners)");
    }
}

#[test]
fn compose_nodes_match_the_member_list() {
    let compose: Value = serde_yaml::from_str(&repo_file("deploy/docker-compose.yml")).expect("compose YAML");
    let shared = repo_file("deploy/compose/cluster.toml");
    let members = Config::from_toml(&shared).expect("cluster.toml").cluster.initial_members;
    assert_eq!(members.len(), 3);
    let services = compose["services"].as_mapping().expect("services");
    assert_eq!(services.len(), members.len());
    let mut host_ports = std::collections::BTreeSet::new();
    for (name, svc) in services {
        let name = name.as_str().expect("service name");
        let id: u64 = str_of(svc, &["environment", "SILO_NODE_ID"]).parse().expect("numeric node id");
        let advertise = str_of(svc, &["environment", "SILO_ADVERTISE"]);
        let member = members.iter().find(|m| m.id == id).unwrap_or_else(|| panic!("{name}: node {id} not a member"));
        assert_eq!(member.addr, advertise, "{name} advertises the address the others dial");
        assert!(advertise.starts_with(&format!("{name}:")), "{name}'s advertised host is its service name");
        node_config(&shared, id, advertise);
        let volumes: Vec<&str> =
            svc["volumes"].as_sequence().expect("volumes").iter().filter_map(|v| v.as_str()).collect();
        assert!(volumes.iter().any(|v| v.ends_with(":/data")), "{name} keeps its data in a volume");
        assert!(volumes.iter().any(|v| v.contains("cluster.toml")), "{name} mounts the member list");
        for p in svc["ports"].as_sequence().expect("ports") {
            // [ip:]host_port:container_port
            let parts: Vec<&str> = p.as_str().expect("port mapping").split(':').collect();
            assert!(parts.len() == 3 && parts[0] == "127.0.0.1", "{name} publishes {parts:?} beyond loopback");
            let host = parts[1].to_string();
            assert!(host_ports.insert(host.clone()), "host port {host} is used twice");
        }
    }
    let anchor = &compose["x-silo"];
    assert!(anchor["healthcheck"]["test"].as_sequence().is_some_and(|t| !t.is_empty()), "a health check");
}

#[test]
fn kubernetes_statefulset_is_consistent() {
    let text = repo_file("deploy/kubernetes/silo.yaml");
    let docs: Vec<Value> =
        serde_yaml::Deserializer::from_str(&text).map(|d| Value::deserialize(d).expect("a YAML document")).collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| str_of(d, &["kind"]) == kind && str_of(d, &["metadata", "name"]) == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let sts = find("StatefulSet", "silo");
    let headless = find("Service", str_of(sts, &["spec", "serviceName"]));
    assert_eq!(str_of(headless, &["spec", "clusterIP"]), "None", "the StatefulSet's Service is headless");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"].as_bool(), Some(true), "peers resolve before ready");
    let labels = &sts["spec"]["selector"]["matchLabels"];
    assert_eq!(&sts["spec"]["template"]["metadata"]["labels"], labels);
    assert_eq!(&headless["spec"]["selector"], labels);
    let pdb = find("PodDisruptionBudget", "silo");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some((replicas - 1) / 2), "a quorum survives the budget");

    // Node ids from the ordinal (silo-N is node N+1) and addresses from the headless Service.
    let config = find("ConfigMap", "silo");
    let shared = str_of(config, &["data", "cluster.toml"]);
    let members = Config::from_toml(shared).expect("cluster.toml").cluster.initial_members;
    assert_eq!(members.len() as u64, replicas);
    let service = str_of(headless, &["metadata", "name"]);
    for ordinal in 0..replicas {
        let advertise = format!("silo-{ordinal}.{service}:7450");
        let member = members.iter().find(|m| m.id == ordinal + 1).expect("a member per ordinal");
        assert_eq!(member.addr, advertise);
        node_config(shared, ordinal + 1, &advertise);
    }
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let container = &pod["containers"][0];
    let args = container["args"][0].as_str().expect("the start command");
    assert!(args.contains("${HOSTNAME##*-} + 1") && args.contains("${HOSTNAME}.silo:7450"), "{args}");
    assert_eq!(str_of(container, &["readinessProbe", "grpc", "service"]), "silo.v1.Silo");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().is_some_and(|s| s >= 10), "time for the hand-off");
    assert!(sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"].as_str() == Some("data"));
}
