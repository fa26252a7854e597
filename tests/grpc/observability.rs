//! Logs and traces of a real server (issue #14, README "Observability"):
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` set, an RPC's span reaches an OTLP
//! receiver in the caller's trace (W3C `traceparent`) with the job id, and
//! its proposal is a child span; `log.format = "json"` writes JSON lines.
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;

use crate::support::*;

/// An OTLP/gRPC trace receiver keeping every span it is sent (the role of an
/// OpenTelemetry collector).
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock();
        for rs in request.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

#[tokio::test]
async fn rpc_spans_join_the_callers_trace_and_logs_are_json() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    let serving = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(serving))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let s = Server::start(Opts {
        extra_toml: "[log]\nformat = \"json\"\n".into(),
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), format!("http://{collector}")),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("OTEL_SERVICE_NAME".into(), "silo-under-test".into()),
        ],
        ..Opts::default()
    })
    .await;
    let shard = s.shard(0).await;
    let mut c = s.client().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = tonic::Request::new(enqueue_req(&shard, "traced-job"));
    req.metadata_mut().insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
    c.enqueue(req).await.expect("enqueue");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (rpc, propose) = loop {
        {
            let spans = receiver.spans.lock();
            let ours: Vec<&Span> = spans.iter().filter(|sp| hex(&sp.trace_id) == trace_id).collect();
            let rpc = ours.iter().find(|sp| sp.name == "rpc" && attribute(sp, "job_id") == Some("traced-job"));
            let propose = ours.iter().find(|sp| sp.name == "propose");
            if let (Some(r), Some(p)) = (rpc, propose) {
                break ((*r).clone(), (*p).clone());
            }
        }
        assert!(std::time::Instant::now() < deadline, "no exported span of trace {trace_id}\n{}", s.log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(hex(&rpc.parent_span_id), "00f067aa0ba902b7", "the RPC span's parent is the caller's span");
    assert_eq!(attribute(&rpc, "path"), Some("/silo.v1.Silo/Enqueue"));
    assert_eq!(propose.parent_span_id, rpc.span_id, "the proposal is a child of the RPC");
    assert_eq!(attribute(&propose, "op"), Some("enqueue"));

    // Every log line is a JSON object with a level and a message or span.
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
