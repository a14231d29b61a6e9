//! Trace context and OpenTelemetry trace export.
//!
//! - [`TraceParent`]: the W3C `traceparent` of a request, an event or a job.
//! - [`current`] and [`within`]: the trace the running task works for, so an event published
//!   or a job enqueued while handling a traced request carries the trace on without every
//!   call passing it.
//! - [`start`]: a span exported over OTLP/HTTP once `install_from_env` (feature `otlp`)
//!   found `OTEL_EXPORTER_OTLP_ENDPOINT`; without it no span is made and nothing is paid.

mod context;
#[cfg(feature = "otlp")]
mod export;

pub use context::{next_traceparent, TraceParent};
#[cfg(feature = "otlp")]
pub use export::{install, install_from_env, ExportSettings, Telemetry};

use std::future::Future;
use std::time::SystemTime;

tokio::task_local! {
    static CURRENT: TraceParent;
}

/// The trace context of the work this task does now: the span of the request, delivery or
/// job run it is part of, or `None` outside one.
pub fn current() -> Option<TraceParent> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Run `work` with `context` as [`current`] (and as it was, with `None`).
pub async fn within<F: Future>(context: Option<TraceParent>, work: F) -> F::Output {
    match context {
        Some(context) => CURRENT.scope(context, work).await,
        None => work.await,
    }
}

/// The `traceparent` value of [`current`], for an envelope or a header.
pub fn current_header() -> Option<String> {
    current().map(|c| c.header())
}

/// What a span stands for, as OpenTelemetry's span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// A request this process answers.
    Server,
    /// A request this process makes.
    Client,
    /// A delivery or a job run this process takes from a queue.
    Consumer,
}

/// An exported span in progress; it ends when dropped or at [`Span::end`].
pub struct Span {
    context: TraceParent,
    #[cfg(feature = "otlp")]
    inner: opentelemetry_sdk::trace::Span,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

/// Whether spans are exported: `install_from_env` (feature `otlp`) found an endpoint.
pub fn enabled() -> bool {
    #[cfg(feature = "otlp")]
    {
        export::tracer().is_some()
    }
    #[cfg(not(feature = "otlp"))]
    {
        false
    }
}

/// A span named `name` of `kind`, a child of `parent` (a new trace without one), that
/// began at `started` (now when `None`); `None` when export is off.
pub fn start(
    name: impl Into<std::borrow::Cow<'static, str>>,
    kind: SpanKind,
    parent: Option<&TraceParent>,
    started: Option<SystemTime>,
) -> Option<Span> {
    #[cfg(feature = "otlp")]
    {
        export::start(name.into(), kind, parent, started)
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = (name.into(), kind, parent, started);
        None
    }
}

impl Span {
    /// This span's trace context: what goes on in a `traceparent` header or an envelope.
    pub fn context(&self) -> &TraceParent {
        &self.context
    }

    /// Name the span anew, once what it stands for is known (a request's route).
    pub fn rename(&mut self, name: impl Into<String>) {
        #[cfg(feature = "otlp")]
        export::rename(&mut self.inner, name.into());
        #[cfg(not(feature = "otlp"))]
        let _ = name.into();
    }

    /// Set a text attribute.
    pub fn set_str(&mut self, key: &'static str, value: impl Into<String>) {
        #[cfg(feature = "otlp")]
        export::set(
            &mut self.inner,
            key,
            opentelemetry::Value::from(value.into()),
        );
        #[cfg(not(feature = "otlp"))]
        let _ = (key, value.into());
    }

    /// Set a number attribute.
    pub fn set_i64(&mut self, key: &'static str, value: i64) {
        #[cfg(feature = "otlp")]
        export::set(&mut self.inner, key, opentelemetry::Value::from(value));
        #[cfg(not(feature = "otlp"))]
        let _ = (key, value);
    }

    /// Set a yes/no attribute.
    pub fn set_bool(&mut self, key: &'static str, value: bool) {
        #[cfg(feature = "otlp")]
        export::set(&mut self.inner, key, opentelemetry::Value::from(value));
        #[cfg(not(feature = "otlp"))]
        let _ = (key, value);
    }

    /// Mark the span failed with `message`.
    pub fn fail(&mut self, message: impl Into<String>) {
        #[cfg(feature = "otlp")]
        export::fail(&mut self.inner, message.into());
        #[cfg(not(feature = "otlp"))]
        let _ = message.into();
    }

    /// End the span now.
    pub fn end(self) {
        drop(self);
    }
}
