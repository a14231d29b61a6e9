//! OTLP/HTTP export of spans through OpenTelemetry's SDK: a batch processor on its own
//! thread, so a request only hands its ended span to a bounded queue (full: dropped).

use super::{Span, SpanKind, TraceParent};
use crate::{Error, Result};
use bytes::Bytes;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The process's tracer, once export is installed.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

pub(super) fn tracer() -> Option<&'static SdkTracer> {
    TRACER.get()
}

/// Trace export, installed for the whole process: [`Telemetry::shutdown`] sends what is
/// still queued. It blocks while it does: call it off the async threads (`spawn_blocking`),
/// as the export's requests run on the runtime.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Send the queued spans and stop exporting.
    pub fn shutdown(&self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::debug!(error = %err, "trace export did not shut down cleanly");
        }
    }

    /// Send the queued spans now.
    pub fn flush(&self) {
        if let Err(err) = self.provider.force_flush() {
            tracing::debug!(error = %err, "trace export did not flush");
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where and how spans are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// The OTLP/HTTP endpoint: a base URL (`http://collector:4318`, to which `/v1/traces`
    /// is added) or, with `traces_path_given`, the full traces URL.
    pub endpoint: String,
    /// `endpoint` is the full traces URL (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub traces_path_given: bool,
    /// The `service.name` of the exported spans.
    pub service: String,
    /// How long ended spans wait to be sent together; `None`: `OTEL_BSP_SCHEDULE_DELAY`,
    /// else 5 s.
    pub batch_delay: Option<Duration>,
}

/// Export spans over OTLP/HTTP (protobuf) as the standard variables say, or `None` when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is unset,
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. The service name is
/// `OTEL_SERVICE_NAME`, else `service`; `OTEL_TRACES_SAMPLER(_ARG)` choose the sampler and
/// `OTEL_BSP_*` the batching. Call inside a Tokio runtime: the export requests run on it.
pub fn install_from_env(service: &str) -> Result<Option<Telemetry>> {
    let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let (endpoint, traces_path_given) = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        Some(full) => (full, true),
        None => match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(base) => (base, false),
            None => return Ok(None),
        },
    };
    if disabled {
        return Ok(None);
    }
    let protocol =
        var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(protocol) = protocol.filter(|p| p != "http/protobuf") {
        return Err(Error::invalid(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            format!("`{protocol}` is not supported; use `http/protobuf` (port 4318)"),
        ));
    }
    install(ExportSettings {
        endpoint,
        traces_path_given,
        service: var("OTEL_SERVICE_NAME").unwrap_or_else(|| service.to_owned()),
        batch_delay: None,
    })
    .map(Some)
}

/// Export spans as `settings` say, for the rest of the process; a second call is refused.
/// Call inside a Tokio runtime: the export requests run on it.
pub fn install(settings: ExportSettings) -> Result<Telemetry> {
    let field = "OTEL_EXPORTER_OTLP_ENDPOINT";
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::invalid(field, "trace export starts inside a Tokio runtime"))?;
    let url = if settings.traces_path_given {
        settings.endpoint.clone()
    } else {
        format!("{}/v1/traces", settings.endpoint.trim_end_matches('/'))
    };
    let parsed = reqwest::Url::parse(&url).map_err(|err| Error::invalid(field, err.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::invalid(field, "must be an http:// or https:// URL"));
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| Error::Backend(Box::new(err)))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url)
        .with_http_client(OnRuntime { client, runtime })
        .build()
        .map_err(|err| Error::invalid(field, err.to_string()))?;
    let resource = Resource::builder()
        .with_service_name(settings.service.clone())
        .build();
    let mut batch = BatchConfigBuilder::default();
    if let Some(delay) = settings.batch_delay {
        batch = batch.with_scheduled_delay(delay);
    }
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch.build())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    TRACER
        .set(provider.tracer("omc-orchestra"))
        .map_err(|_| Error::Conflict("trace export is already installed in this process".into()))?;
    Ok(Telemetry { provider })
}

/// The export's HTTP client: the process's `reqwest` run on its Tokio runtime, so the
/// batch thread needs no runtime or second HTTP stack of its own.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let answer = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = answer.status();
            let headers = answer.headers().clone();
            let mut response = http::Response::new(answer.bytes().await?);
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            Ok::<_, reqwest::Error>(response)
        });
        Ok(sent.await??)
    }
}

pub(super) fn start(
    name: Cow<'static, str>,
    kind: SpanKind,
    parent: Option<&TraceParent>,
    started: Option<SystemTime>,
) -> Option<Span> {
    let tracer = tracer()?;
    let parent_cx = match parent.and_then(remote) {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    };
    let mut builder = tracer.span_builder(name).with_kind(match kind {
        SpanKind::Server => opentelemetry::trace::SpanKind::Server,
        SpanKind::Client => opentelemetry::trace::SpanKind::Client,
        SpanKind::Consumer => opentelemetry::trace::SpanKind::Consumer,
    });
    builder.start_time = started;
    let inner = tracer.build_with_context(builder, &parent_cx);
    let made = inner.span_context();
    let context = TraceParent {
        trace_id: format!("{:032x}", made.trace_id()),
        parent_id: format!("{:016x}", made.span_id()),
        flags: made.trace_flags().to_u8(),
    };
    Some(Span { context, inner })
}

/// The caller's span as OpenTelemetry's remote parent.
fn remote(parent: &TraceParent) -> Option<SpanContext> {
    Some(SpanContext::new(
        TraceId::from_hex(&parent.trace_id).ok()?,
        SpanId::from_hex(&parent.parent_id).ok()?,
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    ))
}

pub(super) fn set(span: &mut opentelemetry_sdk::trace::Span, key: &'static str, value: Value) {
    span.set_attribute(KeyValue::new(key, value));
}

pub(super) fn fail(span: &mut opentelemetry_sdk::trace::Span, message: String) {
    span.set_status(Status::error(message));
}

pub(super) fn rename(span: &mut opentelemetry_sdk::trace::Span, name: String) {
    span.update_name(name);
}
