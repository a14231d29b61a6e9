//! The gateway and its request pipeline: admit (route, auth, rate limit, see
//! [`super::admit`]) → trace context → cache or forward → record.

use super::access_log::{Access, AccessLog};
use super::admit::{Admitted, Facts, RequestContext};
use super::answers::{error, rate_headers};
use super::auth::Authenticator;
use super::breaker::Breakers;
use super::cache::{
    request_bypasses, request_refreshes, CacheKey, CacheStore, MemoryCacheStore, ResponseCache,
};
use super::config::GatewayConfig;
use super::h1::Answer;
use super::names::{X_CACHE, X_REQUEST_ID};
use super::pool::UpstreamPool;
use super::proxy::Target;
use super::ratelimit::{RateLimitStore, RateLimiter};
use super::retry::RetryBudget;
use super::rewrite::Rewrite;
use super::routes::{RouteMatch, RouteTable};
use super::view::ServiceView;
use super::GatewayBody;
use crate::registry::Registry;
use crate::telemetry::{next_traceparent, TraceParent};
use crate::{Result, SharedClock};
use http::header::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the gateway did with a request, attached to every response as an extension so
/// the server can count it.
#[derive(Debug, Clone, Default)]
pub struct ProxyInfo {
    /// The route's name (`unmatched` when none; `{prefix}/(unknown)` for a discovery
    /// request to a service nothing answers to).
    pub route: Arc<str>,
    /// The service (empty when no route matched; [`UNKNOWN_SERVICE`](super::UNKNOWN_SERVICE) when nothing
    /// answers to the name in the path).
    pub service: Arc<str>,
    /// The instance that answered (`static:{service}` for a static fallback).
    pub instance: Option<Arc<str>>,
    /// `HIT` or `MISS` on cached routes.
    pub cache: Option<&'static str>,
    /// How long the gateway took to answer (the head; a streamed body may take longer).
    pub elapsed: Duration,
    /// The rate-limit store failed and the failure policy decided.
    pub rate_limit_degraded: bool,
    /// Upstream attempts made (retries included).
    pub attempts: u32,
    /// The W3C trace id the upstream got.
    pub trace_id: Option<String>,
    /// The span id the gateway gave its upstream call.
    pub span_id: Option<String>,
    /// The client: the peer, or behind trusted proxies the address they forwarded for
    /// (see [`GatewayConfig::real_client`](super::GatewayConfig::real_client)).
    pub client: Option<IpAddr>,
}

/// An admitted request on its way upstream: what the forwarding steps read, and the
/// record they fill in.
pub(super) struct Outbound<'r> {
    pub(super) matched: &'r RouteMatch,
    pub(super) rewrite: &'r Rewrite<'r>,
    /// Most attempts (retries included) the configuration allows.
    pub(super) max_attempts: u32,
    /// When the request came: the upstream deadline counts from it.
    pub(super) started: Instant,
    pub(super) info: &'r mut ProxyInfo,
}

/// The part of the gateway a reload replaces: routes, keys, static fallbacks and the
/// settings read per request.
pub(super) struct Dynamic {
    pub(super) config: GatewayConfig,
    pub(super) routes: RouteTable,
    pub(super) auth: Authenticator,
    pub(super) statics: HashMap<String, Arc<Target>>,
}

impl Dynamic {
    fn build(config: GatewayConfig) -> Result<Self> {
        config.validate()?;
        let statics = config
            .static_services
            .iter()
            .filter_map(|(service, url)| {
                Some((service.clone(), Arc::new(Target::fixed(service, url)?)))
            })
            .collect();
        Ok(Self {
            routes: RouteTable::new(&config),
            auth: Authenticator::new(&config.auth)?,
            statics,
            config,
        })
    }
}

/// The gateway: every engine, composed.
pub struct Gateway {
    pub(super) dynamic: RwLock<Arc<Dynamic>>,
    pub(super) view: Arc<ServiceView>,
    pub(super) breakers: Breakers,
    pub(super) limiter: RateLimiter,
    pub(super) cache: ResponseCache,
    pub(super) pool: UpstreamPool,
    pub(super) budget: RetryBudget,
    pub(super) clock: SharedClock,
    pub(super) access_log: Option<AccessLog>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.current().routes)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `registry` with `config` (validated here), its time from `clock`
    /// and its rate-limit counters in `rate_store`.
    pub fn new(
        config: GatewayConfig,
        registry: Arc<dyn Registry>,
        clock: SharedClock,
        rate_store: Arc<dyn RateLimitStore>,
        panic_threshold_percent: Option<u8>,
    ) -> Result<Self> {
        let breakers = Breakers::new(config.breaker.clone(), clock.clone());
        let limiter = RateLimiter::new(rate_store, config.rate_limit.fail_open);
        let memory = Arc::new(MemoryCacheStore::new(config.cache.clone(), clock.clone()));
        let cache = ResponseCache::new(config.cache.clone(), clock.clone(), memory);
        let budget = RetryBudget::new(config.retry_budget_percent, 10);
        Ok(Self {
            dynamic: RwLock::new(Arc::new(Dynamic::build(config)?)),
            view: Arc::new(ServiceView::new(registry, panic_threshold_percent)),
            breakers,
            limiter,
            cache,
            pool: UpstreamPool::default(),
            budget,
            clock,
            access_log: None,
        })
    }

    /// Keep cached answers in `store` (in process by default).
    pub fn with_cache_store(mut self, store: Arc<dyn CacheStore>) -> Self {
        self.cache = ResponseCache::new(self.cache.config().clone(), self.clock.clone(), store);
        self
    }

    /// Replace the routes, keys, static fallbacks, limits, timeouts and retry settings
    /// with those of `config`, without dropping a connection; requests in flight finish
    /// on the old ones. Breaker, cache and rate-limit store settings stay as started.
    /// An invalid `config` changes nothing.
    pub fn reload(&self, config: GatewayConfig) -> Result<()> {
        let dynamic = Dynamic::build(config)?;
        *self.dynamic.write() = Arc::new(dynamic);
        Ok(())
    }

    pub(super) fn current(&self) -> Arc<Dynamic> {
        self.dynamic.read().clone()
    }

    /// Also send one record per request to `sink` (through a queue: requests never wait
    /// for it). Returns the writer task.
    pub fn log_to(&mut self, sink: Arc<dyn crate::logs::LogSink>) -> tokio::task::JoinHandle<()> {
        let (log, task) = AccessLog::spawn(sink);
        self.access_log = Some(log);
        task
    }

    /// Start the background work (following the registry, forgetting breakers of
    /// instances that left) until the returned tasks are aborted.
    pub fn spawn(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let every = Duration::from_secs(self.current().config.resync_secs);
        let view = self.view.spawn(every);
        let gateway = self.clone();
        let prune = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let mut live = gateway.view.instance_ids();
                live.extend(gateway.current().statics.values().map(|t| t.id.to_string()));
                gateway.breakers.retain(&live);
                gateway.pool.sweep();
            }
        });
        vec![view, prune]
    }

    /// The configuration in force.
    pub fn config(&self) -> GatewayConfig {
        self.current().config.clone()
    }

    /// The local registry view.
    pub fn view(&self) -> &Arc<ServiceView> {
        &self.view
    }

    /// The circuit breakers.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }

    /// The response cache.
    pub fn cache(&self) -> &ResponseCache {
        &self.cache
    }

    /// Serve one request from `client_ip`. Never fails: errors are JSON answers (404 no
    /// route, 401, 429, 502/504 upstream failure, 503 no instance). Logs one line at
    /// DEBUG. The answer carries what the gateway did as a [`ProxyInfo`] extension.
    pub async fn handle(
        &self,
        req: Request<GatewayBody>,
        client_ip: IpAddr,
    ) -> Response<GatewayBody> {
        let (answer, info) = self.serve(req, client_ip).await;
        let mut response = answer.into_response();
        response.extensions_mut().insert(info);
        response
    }

    /// [`Gateway::handle`], with what the gateway did returned beside the answer rather
    /// than in it, and the answer's headers in wire form (an upstream's as they came),
    /// for an HTTP/1.1 writer to copy as they are; [`Answer::into_response`] puts them
    /// in a header map.
    ///
    /// The steps, each over the request's context: admit it (route, authenticate,
    /// rate-limit), answer it from the cache or an upstream, record it.
    pub async fn serve(&self, req: Request<GatewayBody>, client_ip: IpAddr) -> (Answer, ProxyInfo) {
        // The one clock reading of the request's start: its latency, the upstream
        // timeout and the pooled connection's age all count from it.
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        // Shares the request's bytes (no copy of the path).
        let uri = parts.uri.clone();
        let facts = Facts::of(&parts.headers);
        let head = (&parts.method, &uri, &parts.headers);
        let mut cx = self.context(head, &facts, client_ip, started);
        let incoming = facts.traceparent.and_then(|v| v.to_str().ok());
        cx.span = span_for(&cx, incoming);
        let answer = match self.admit(&mut cx, &parts, &facts).await {
            Ok(admitted) => {
                // With export on, the upstream's parent is the gateway's own span.
                let trace = match &cx.span {
                    Some(span) => span.context().clone(),
                    None => next_traceparent(incoming),
                };
                self.cache_or_forward(&mut cx, parts, body, admitted, trace)
                    .await
            }
            Err(refused) => refused,
        };
        self.record(cx, answer)
    }

    /// The answer to an admitted request: through an upgrade, from the cache, or from an
    /// upstream, carrying the rate-limit headers; the trace ids go in the record.
    async fn cache_or_forward(
        &self,
        cx: &mut RequestContext<'_>,
        mut parts: http::request::Parts,
        body: GatewayBody,
        admitted: Admitted,
        trace: TraceParent,
    ) -> Answer {
        let Admitted {
            matched,
            identity,
            decision,
        } = admitted;
        let client = (cx.peer, cx.trusted);
        let rewrite = Rewrite::new(
            &parts.headers,
            client,
            identity.as_deref(),
            &trace,
            &cx.request_id,
        );
        let mut outbound = Outbound {
            matched: &matched,
            rewrite: &rewrite,
            max_attempts: cx.dynamic.config.max_attempts,
            started: cx.started,
            info: &mut cx.info,
        };
        let mut answer = if let Some(protocol) = super::upgrade::requested(&parts.headers) {
            drop(body);
            rewrite.apply(&mut parts.headers);
            let upgrade = self.upgrade(parts, protocol, &matched, outbound.info);
            Answer::from(Box::pin(upgrade).await)
        } else if matched.route.cache_ttl.is_some()
            && matches!(parts.method, Method::GET | Method::HEAD)
            && !request_bypasses(&parts.headers)
        {
            Box::pin(self.cached(parts, body, &mut outbound)).await
        } else {
            self.forward(parts, body, &mut outbound).await
        };
        if let Some(decision) = &decision {
            rate_headers(&mut answer.headers, decision);
        }
        // The rewrite wrote the trace's header; its ids are the record's now.
        drop(rewrite);
        cx.info.trace_id = Some(trace.trace_id);
        cx.info.span_id = Some(trace.parent_id);
        answer
    }

    /// Log the request's line (and its access record, when kept) and set its id on the
    /// answer, also over a cached answer that carried another one.
    fn record(&self, cx: RequestContext<'_>, mut answer: Answer) -> (Answer, ProxyInfo) {
        let RequestContext {
            started,
            method,
            path,
            request_id,
            mut info,
            span,
            ..
        } = cx;
        if info.route.is_empty() {
            info.route = "unmatched".into();
        }
        let status = answer.status().as_u16();
        let bytes = answer.length();
        info.elapsed = started.elapsed();
        if let Some(span) = span {
            finish_span(span, &method, status, &info);
        }
        let latency_ms = info.elapsed.as_secs_f64() * 1000.0;
        let id = request_id.to_str().unwrap_or("-");
        // DEBUG, not INFO: at a server's default level a line per request is a formatted
        // write on the serving thread, which cost `orchestra up` about a third of its
        // throughput; the log store (`access_log`) and the metrics keep every request.
        tracing::debug!(
            target: "orchestra::gateway",
            method = %method,
            path = &*path,
            route = %info.route,
            service = %info.service,
            instance = info.instance.as_deref().unwrap_or("-"),
            status,
            latency_ms,
            bytes,
            cache = info.cache.unwrap_or("-"),
            request_id = %id,
            "gateway request"
        );
        if let Some(log) = &self.access_log {
            let access = Access {
                method: method.as_str(),
                path: &path,
                status,
                latency_ms,
                bytes,
                request_id: id,
                info: &info,
            };
            log.send(access.record(self.clock.now()));
        }
        answer.headers.set(&X_REQUEST_ID, request_id.as_bytes());
        (answer, info)
    }

    /// Answer from the cache, or forward the request and store what it brings.
    async fn cached(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        out: &mut Outbound<'_>,
    ) -> Answer {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let key = CacheKey {
            route: out.matched.route.name.to_string(),
            consumer: out.rewrite.subject().unwrap_or_default().to_owned(),
            path: path_and_query,
        };
        let refresh = request_refreshes(&parts.headers);
        let head = parts.method == Method::HEAD;
        if !refresh {
            if let Some(hit) = self.cache.lookup(&key, &parts.headers).await {
                out.info.cache = Some("HIT");
                return super::forward::from_cache(&hit, head).into();
            }
        }
        // A fill whose upstream stalls is bounded by the route's timeout; a request that
        // waited as long for it goes upstream on its own rather than wait on.
        let timeout = out.matched.route.timeout;
        let fill = tokio::time::timeout(timeout, self.cache.fill(&key)).await;
        if fill.is_ok() && !refresh {
            if let Some(hit) = self.cache.lookup(&key, &parts.headers).await {
                out.info.cache = Some("HIT");
                return super::forward::from_cache(&hit, head).into();
            }
        }
        out.info.cache = Some("MISS");
        let request_headers = parts.headers.clone();
        let ttl = out.matched.route.cache_ttl;
        let response = self.forward(parts, body, out).await.into_response();
        let mut response = if head {
            response
        } else {
            let stored = self.store(&key, &request_headers, response, ttl);
            match tokio::time::timeout(timeout, stored).await {
                Ok(stored) => stored,
                Err(_) => {
                    let message =
                        format!("the upstream answer stalled for {} ms", timeout.as_millis());
                    error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message)
                }
            }
        };
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static("MISS"));
        response.into()
    }
}

/// The exported span of a request, begun when it came and named once its route is known;
/// `None` with export off.
fn span_for(cx: &RequestContext<'_>, incoming: Option<&str>) -> Option<crate::telemetry::Span> {
    if !crate::telemetry::enabled() {
        return None;
    }
    let parent = incoming.and_then(TraceParent::parse);
    let began = std::time::SystemTime::now().checked_sub(cx.started.elapsed());
    crate::telemetry::start(
        cx.method.to_string(),
        crate::telemetry::SpanKind::Server,
        parent.as_ref(),
        began,
    )
}

/// What the gateway did, as the span's attributes (OpenTelemetry's HTTP names where one
/// exists), and the span ended.
fn finish_span(mut span: crate::telemetry::Span, method: &Method, status: u16, info: &ProxyInfo) {
    span.rename(format!("{method} {}", info.route));
    span.set_str("http.request.method", method.as_str());
    span.set_i64("http.response.status_code", i64::from(status));
    span.set_str("http.route", &*info.route);
    span.set_str("orchestra.service", &*info.service);
    if let Some(instance) = &info.instance {
        span.set_str("orchestra.instance", &**instance);
    }
    span.set_i64("orchestra.attempts", i64::from(info.attempts));
    span.set_i64(
        "orchestra.retries",
        i64::from(info.attempts.saturating_sub(1)),
    );
    if let Some(cache) = info.cache {
        span.set_str("orchestra.cache", cache);
    }
    span.set_bool("orchestra.rate_limit_degraded", info.rate_limit_degraded);
    if status == 429 {
        span.set_str("orchestra.rate_limit", "limited");
    }
    if let Some(client) = info.client {
        span.set_str("client.address", client.to_string());
    }
    if status >= 500 {
        span.fail(format!("answered {status}"));
    }
    span.end();
}
