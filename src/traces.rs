//! A node's logs and OpenTelemetry traces (issue #14; README "Observability").
//!
//! - Logs go to stderr as text or JSON lines, filtered by `--log` /
//!   `SILO_LOG`, else `RUST_LOG`, else [`DEFAULT_FILTER`].
//! - When `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. `http://collector:4317`),
//!   spans are also exported over OTLP/gRPC in batches, with service name
//!   `OTEL_SERVICE_NAME` (default `silo`). Every RPC is a server span
//!   ([`rpc_span`]) whose parent is the W3C `traceparent` the caller sent, so
//!   a client's trace continues through the node; proposals are child spans
//!   (`propose`, with the op), and handlers record `job_id` / `task_id` on
//!   their RPC span.
//! - RPC and proposal spans have target [`RPC_TARGET`] at DEBUG level, so
//!   they cost nothing unless they are used: [`init`] turns them on when
//!   traces are exported, and a `--log` filter at debug (e.g.
//!   `silo::rpc=debug`) turns them on for the log lines' context. A span per
//!   call was 3-5% of a busy leader's CPU with nothing reading it (issue #11,
//!   docs/BENCHMARKS.md "Less CPU per job on every replica").
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The log filter when neither `--log`/`SILO_LOG` nor `RUST_LOG` is set.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

/// The target of the per-RPC (`rpc`) and per-proposal (`propose`) spans.
pub const RPC_TARGET: &str = "silo::rpc";

/// Installs the global subscriber: the filter (see the module docs), a
/// text or JSON (`format == "json"`) stderr layer, and the OTLP exporter when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call it inside the tokio runtime
/// (the exporter's gRPC channel lives on it). Returns the tracer provider to
/// flush at exit, if exporting; an exporter that cannot be built is logged
/// and skipped (the node still runs).
pub fn init(filter: Option<&str>, format: &str) -> Option<SdkTracerProvider> {
    let filter = filter
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_FILTER.into());
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let stderr = if format == "json" {
        stderr.json().with_current_span(true).with_span_list(false).boxed()
    } else {
        stderr.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed()
    };
    let (provider, exporter_error) = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => match otlp_provider() {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(format!("OTLP exporter to {endpoint}: {e}"))),
        },
        _ => (None, None),
    };
    let filter = env_filter(&filter, provider.is_some());
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("silo")));
    tracing_subscriber::registry().with(filter).with(stderr).with(otel).init();
    if let Some(e) = exporter_error {
        tracing::error!("traces are not exported: {e}");
    }
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        tracing::info!("exporting traces over OTLP");
    }
    provider
}

/// The subscriber's filter: the user's (`user`, EnvFilter syntax), plus the
/// RPC spans at DEBUG when traces are exported, whatever the log level (the
/// filter is shared by the log and the exporter layers, so with export on
/// the log layer records those spans too).
fn env_filter(user: &str, exporting: bool) -> tracing_subscriber::EnvFilter {
    let filter = tracing_subscriber::EnvFilter::new(user);
    if exporting {
        filter.add_directive(format!("{RPC_TARGET}=debug").parse().expect("a valid directive"))
    } else {
        filter
    }
}

fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "silo".into());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(name).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

/// Flushes and stops the exporter (at exit; spans still queued are sent).
pub fn shutdown(provider: Option<SdkTracerProvider>) {
    if let Some(p) = provider {
        if let Err(e) = p.shutdown() {
            eprintln!("flushing traces: {e}");
        }
    }
}

/// Reads W3C trace-context headers out of an HTTP request.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The span of one gRPC request: `rpc` with its path and empty `job_id` /
/// `task_id` fields the handler fills in, a server span whose parent is the
/// caller's `traceparent` (when it sent one and traces are exported).
/// A disabled span (see the module docs) when nothing would record it.
pub fn rpc_span<B>(req: &http::Request<B>) -> tracing::Span {
    let span = tracing::debug_span!(
        target: RPC_TARGET,
        "rpc",
        path = %req.uri().path(),
        job_id = tracing::field::Empty,
        task_id = tracing::field::Empty,
        otel.kind = "server",
    );
    if !span.is_disabled() && req.headers().contains_key("traceparent") {
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let _ = span.set_parent(parent);
    }
    span
}

/// Records a job id on the current RPC span.
pub fn record_job(id: &str) {
    tracing::Span::current().record("job_id", id);
}

/// Records a task id on the current RPC span.
pub fn record_task(id: &str) {
    tracing::Span::current().record("task_id", id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn rpc_spans_are_off_unless_exported_or_asked_for() {
        let req = http::Request::new(());
        let on = |user: &str, exporting: bool| {
            let subscriber = tracing_subscriber::registry().with(env_filter(user, exporting));
            tracing::subscriber::with_default(subscriber, || !rpc_span(&req).is_disabled())
        };
        assert!(!on(DEFAULT_FILTER, false), "the default filter creates no span per call");
        assert!(!on("warn", false));
        assert!(on(DEFAULT_FILTER, true), "exporting turns them on");
        assert!(on("warn", true), "whatever the log level");
        assert!(on(&format!("{DEFAULT_FILTER},{RPC_TARGET}=debug"), false), "asking for them turns them on");
        assert!(on("debug", false));
    }

    #[test]
    fn traceparent_is_read_from_the_request() {
        let mut req = http::Request::new(());
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        req.headers_mut().insert("traceparent", parent.parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let sc = cx.span().span_context().clone();
        assert_eq!(sc.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert!(sc.is_remote() && sc.is_sampled());
    }
}
