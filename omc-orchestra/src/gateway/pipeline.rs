//! The request pipeline: route → auth → rate limit → trace context → cache → forward.

use super::access_log::{Access, AccessLog};
use super::answers::{error, invalid, rate_headers, rejected};
use super::auth::{Authenticator, Identity};
use super::breaker::Breakers;
use super::cache::{
    request_bypasses, request_refreshes, CacheKey, CacheStore, MemoryCacheStore, ResponseCache,
};
use super::config::GatewayConfig;
use super::h1::Answer;
use super::names::{TRACEPARENT, X_CACHE, X_REQUEST_ID};
use super::pool::UpstreamPool;
use super::proxy::Target;
use super::ratelimit::{Limit, RateDecision, RateLimitStore, RateLimiter, Window};
use super::retry::RetryBudget;
use super::rewrite::Rewrite;
use super::routes::{normalized_path, RouteMatch, RouteSpec, RouteTable, UNKNOWN_SERVICE};
use super::trace::next_traceparent;
use super::view::ServiceView;
use super::GatewayBody;
use crate::registry::Registry;
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
    /// The service (empty when no route matched; [`UNKNOWN_SERVICE`] when nothing
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

/// The longest `X-Request-Id` of a caller's that the gateway keeps, in bytes.
const MAX_REQUEST_ID: usize = 200;

/// The request headers the pipeline reads, found in one pass over the header map: a
/// lookup by name would hash the name, four times per request. The first value of a
/// name counts, as a lookup would have it.
#[derive(Default)]
struct Facts<'a> {
    request_id: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
    api_key: Option<&'a HeaderValue>,
    /// How many `Host` lines the request has (counted up to 2).
    hosts: u8,
}

impl<'a> Facts<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let mut facts = Self::default();
        for (name, value) in headers {
            let slot = if name == http::header::HOST {
                facts.hosts = (facts.hosts + 1).min(2);
                continue;
            } else if name == http::header::AUTHORIZATION {
                &mut facts.authorization
            } else if name == X_REQUEST_ID {
                &mut facts.request_id
            } else if name == TRACEPARENT {
                &mut facts.traceparent
            } else if name == super::names::X_API_KEY {
                &mut facts.api_key
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        facts
    }
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
    /// route, 401, 429, 502/504 upstream failure, 503 no instance). Logs one line. The
    /// answer carries what the gateway did as a [`ProxyInfo`] extension.
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
    /// than in it, and an upstream's headers (of an answer that came from one) left in
    /// wire form in the [`Answer`], for an HTTP/1.1 writer to copy as they are;
    /// [`Answer::into_response`] puts them in the header map.
    pub async fn serve(&self, req: Request<GatewayBody>, client_ip: IpAddr) -> (Answer, ProxyInfo) {
        // The one clock reading of the request's start: its latency, the upstream
        // timeout and the pooled connection's age all count from it.
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let method = parts.method.clone();
        // Shares the request's bytes (no copy of the path).
        let uri = parts.uri.clone();
        // Routed and sent upstream normalised (see `normalized_path`); a path that does
        // not normalise is answered 400 below.
        let (resolved, unnormal) = match normalized_path(uri.path()) {
            Ok(normal) => (normal, None),
            Err(reason) => (std::borrow::Cow::Borrowed(uri.path()), Some(reason)),
        };
        let path = &*resolved;
        // The caller's id when the caller is trusted and the id printable and short,
        // else a new one; one header value serves the upstream request and the answer.
        let facts = Facts::of(&parts.headers);
        let dynamic = self.current();
        let trusted = dynamic.config.trusts(client_ip);
        // Rate limits and the access log count the client behind trusted proxies.
        let client = if trusted {
            dynamic.config.real_client(client_ip, &parts.headers)
        } else {
            client_ip
        };
        let given = facts
            .request_id
            .filter(|v| {
                trusted
                    && (1..=MAX_REQUEST_ID).contains(&v.len())
                    && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
            })
            .cloned();
        let id_value = given.unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
        });
        let request_id = id_value.to_str().unwrap_or("-");
        let mut info = ProxyInfo {
            client: Some(client),
            ..ProxyInfo::default()
        };
        // The route's steps, written out here rather than in a function of their own: a
        // proxied request's state (a few KiB) is then not copied from one to the other.
        let mut answer: Answer = 'route: {
            // RFC 9112 (3.2): an HTTP/1.1 request names its host once, in `Host` or in an
            // absolute target; which of two hosts a request meant is anyone's guess.
            let unnamed = facts.hosts == 0 && uri.authority().is_none();
            if parts.version == http::Version::HTTP_11 && (unnamed || facts.hosts > 1) {
                let reason = "an HTTP/1.1 request needs exactly one Host header";
                break 'route invalid("host", reason).into();
            }
            if let Some(reason) = unnormal {
                break 'route invalid("path", reason).into();
            }
            let Some(mut matched) = dynamic.routes.find(path) else {
                let message = format!("no route for {path}");
                break 'route error(StatusCode::NOT_FOUND, "not_found", &message).into();
            };
            let known;
            (matched.service, known) = self.resolve(&dynamic, matched.service);
            if known || !matched.discovery {
                info.route = matched.route.name.clone();
                info.service = matched.service.clone();
            } else {
                // The name came from the client's path and nothing answers to it: the
                // metrics and the log record take one name for all such requests (the
                // logged path still says which), so made-up names add no series.
                info.route = dynamic.routes.unknown_route();
                info.service = UNKNOWN_SERVICE.into();
            }
            let spec = matched.route.clone();
            if !spec.methods.is_empty() && !spec.methods.contains(&parts.method) {
                let message = format!("{} is not allowed on {path}", parts.method);
                let status = StatusCode::METHOD_NOT_ALLOWED;
                break 'route error(status, "method_not_allowed", &message).into();
            }
            let identity = match Self::identify(&dynamic, &spec, &facts) {
                Ok(identity) => identity,
                Err(refused) => break 'route (*refused).into(),
            };
            let route = &*info.route;
            let decision = self.limit(&spec, route, identity.as_deref(), client).await;
            if let Some(decision) = &decision {
                info.rate_limit_degraded = decision.degraded;
                if !decision.allowed {
                    break 'route rejected(decision, request_id).into();
                }
            }
            let trace = next_traceparent(facts.traceparent.and_then(|v| v.to_str().ok()));
            let rewrite = Rewrite::new(
                &parts.headers,
                (client_ip, trusted),
                identity.as_deref(),
                &trace,
                &id_value,
            );
            let mut answer = if let Some(protocol) = super::upgrade::requested(&parts.headers) {
                drop(body);
                rewrite.apply(&mut parts.headers);
                let upgrade = self.upgrade(parts, protocol, &matched, &mut info);
                Answer::from(Box::pin(upgrade).await)
            } else if spec.cache_ttl.is_some()
                && matches!(parts.method, Method::GET | Method::HEAD)
                && !request_bypasses(&parts.headers)
            {
                let attempts = dynamic.config.max_attempts;
                let cached = self.cached(
                    parts, body, &matched, attempts, &rewrite, &mut info, started,
                );
                Box::pin(cached).await
            } else {
                let attempts = dynamic.config.max_attempts;
                self.forward(
                    parts, body, &matched, attempts, &rewrite, &mut info, started,
                )
                .await
            };
            if let Some(decision) = &decision {
                answer.set_headers(|headers| rate_headers(headers, decision));
            }
            // The rewrite wrote the trace's header; its ids are the record's now.
            drop(rewrite);
            info.trace_id = Some(trace.trace_id);
            info.span_id = Some(trace.parent_id);
            answer
        };
        if info.route.is_empty() {
            info.route = "unmatched".into();
        }
        let status = answer.status().as_u16();
        let bytes = answer.length();
        info.elapsed = started.elapsed();
        let latency_ms = info.elapsed.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "orchestra::gateway",
            method = %method,
            path,
            route = %info.route,
            service = %info.service,
            instance = info.instance.as_deref().unwrap_or("-"),
            status,
            latency_ms,
            bytes,
            cache = info.cache.unwrap_or("-"),
            request_id = %request_id,
            "gateway request"
        );
        if let Some(log) = &self.access_log {
            let access = Access {
                method: method.as_str(),
                path,
                status,
                latency_ms,
                bytes,
                request_id,
                info: &info,
            };
            log.send(access.record(self.clock.now()));
        }
        // This request's id, also over a cached answer that carried another one.
        answer.set_headers(|headers| headers.set_value(X_REQUEST_ID, id_value));
        (answer, info)
    }

    /// The caller of a request to a route that wants one (none on public routes), or
    /// the 401 refusing it.
    fn identify(
        dynamic: &Dynamic,
        spec: &RouteSpec,
        facts: &Facts<'_>,
    ) -> std::result::Result<Option<Arc<Identity>>, Box<Response<GatewayBody>>> {
        if !spec.auth {
            return Ok(None);
        }
        match dynamic
            .auth
            .authenticate_values(facts.api_key, facts.authorization)
        {
            Ok(identity) => Ok(Some(identity)),
            Err(failure) => {
                let mut res = error(StatusCode::UNAUTHORIZED, "unauthorized", &failure.0);
                res.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                Err(Box::new(res))
            }
        }
    }

    /// Count the request against the limits of the route `spec`, named `route` (the
    /// name metrics give it, so that made-up service names share one count per client),
    /// by `identity`'s subject or else by the client's address: the decision, none on a
    /// route without limits.
    async fn limit(
        &self,
        spec: &RouteSpec,
        route: &str,
        identity: Option<&Identity>,
        client_ip: IpAddr,
    ) -> Option<RateDecision> {
        // At most four windows: kept on the stack.
        let mut windows = [Limit {
            window: Window::Second,
            max: 0,
        }; 4];
        let mut count = 0;
        for limit in spec.limits.each() {
            windows[count] = limit;
            count += 1;
        }
        let limits = &windows[..count];
        if limits.is_empty() {
            return None;
        }
        // `{route}|sub:{subject}`, or `{route}|ip:{address}` without an identity.
        let mut key = String::with_capacity(route.len() + 48);
        key.push_str(route);
        match identity {
            Some(identity) => {
                key.push_str("|sub:");
                key.push_str(&identity.subject);
            }
            None => {
                key.push_str("|ip:");
                super::proxy::push_ip(&mut key, client_ip);
            }
        }
        Some(self.limiter.check(&key, limits).await)
    }

    /// `/api/pricing/...` serves `pricing-service` when only that one is known; beside
    /// the name, whether an instance or a static URL answers to it.
    fn resolve(&self, dynamic: &Dynamic, service: Arc<str>) -> (Arc<str>, bool) {
        if self.view.knows(&service) || dynamic.statics.contains_key(&*service) {
            return (service, true);
        }
        let long = format!("{service}-service");
        if self.view.knows(&long) || dynamic.statics.contains_key(&long) {
            (long.into(), true)
        } else {
            (service, false)
        }
    }

    /// Answer from the cache, or forward the request (started at `started`) and store
    /// what it brings.
    #[allow(clippy::too_many_arguments)]
    async fn cached(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        matched: &RouteMatch,
        max_attempts: u32,
        rewrite: &Rewrite<'_>,
        info: &mut ProxyInfo,
        started: Instant,
    ) -> Answer {
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let key = CacheKey {
            route: matched.route.name.to_string(),
            consumer: rewrite.subject().unwrap_or_default().to_owned(),
            path: path_and_query,
        };
        let refresh = request_refreshes(&parts.headers);
        let head = parts.method == Method::HEAD;
        if !refresh {
            if let Some(hit) = self.cache.lookup(&key, &parts.headers).await {
                info.cache = Some("HIT");
                return super::forward::from_cache(&hit, head).into();
            }
        }
        // A fill whose upstream stalls is bounded by the route's timeout; a request that
        // waited as long for it goes upstream on its own rather than wait on.
        let fill = tokio::time::timeout(matched.route.timeout, self.cache.fill(&key)).await;
        if fill.is_ok() && !refresh {
            if let Some(hit) = self.cache.lookup(&key, &parts.headers).await {
                info.cache = Some("HIT");
                return super::forward::from_cache(&hit, head).into();
            }
        }
        info.cache = Some("MISS");
        let request_headers = parts.headers.clone();
        let sent = self.forward(parts, body, matched, max_attempts, rewrite, info, started);
        let response = sent.await.into_response();
        let mut response = if head {
            response
        } else {
            let ttl = matched.route.cache_ttl;
            let stored = self.store(&key, &request_headers, response, ttl);
            match tokio::time::timeout(matched.route.timeout, stored).await {
                Ok(stored) => stored,
                Err(_) => {
                    let message = format!(
                        "the upstream answer stalled for {} ms",
                        matched.route.timeout.as_millis()
                    );
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
