//! The steps that admit a request before it goes upstream: its context (path, trust,
//! request id), its route, its caller and its rate limit. Each refusal is an answer.

use super::answers::{error, invalid, rejected};
use super::auth::Identity;
use super::h1::Answer;
use super::names::{TRACEPARENT, X_API_KEY, X_REQUEST_ID};
use super::pipeline::{Dynamic, Gateway, ProxyInfo};
use super::ratelimit::{Limit, RateDecision, Window};
use super::routes::{normalized_path, RouteMatch, RouteSpec, UNKNOWN_SERVICE};
use super::GatewayBody;
use http::header::HeaderValue;
use http::{Method, Response, StatusCode};
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// The answer refusing a request, boxed: it is large beside what an admitted request
/// returns.
type Refusal = Box<Response<GatewayBody>>;

/// The longest `X-Request-Id` of a caller's that the gateway keeps, in bytes.
const MAX_REQUEST_ID: usize = 200;

/// The request headers the pipeline reads, found in one pass over the header map: a
/// lookup by name would hash the name, four times per request. The first value of a
/// name counts, as a lookup would have it.
#[derive(Default)]
pub(super) struct Facts<'a> {
    request_id: Option<&'a HeaderValue>,
    pub(super) traceparent: Option<&'a HeaderValue>,
    authorization: Option<&'a HeaderValue>,
    api_key: Option<&'a HeaderValue>,
    /// How many `Host` lines the request has (counted up to 2).
    hosts: u8,
}

impl<'a> Facts<'a> {
    /// The facts of `headers`.
    pub(super) fn of(headers: &'a http::HeaderMap) -> Self {
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
            } else if name == X_API_KEY {
                &mut facts.api_key
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        facts
    }
}

/// One request on its way through [`Gateway::serve`]'s steps: what they all read, and
/// the record they fill in.
pub(super) struct RequestContext<'a> {
    /// The one clock reading of the request's start.
    pub(super) started: Instant,
    /// The address the request came from.
    pub(super) peer: IpAddr,
    /// The client rate limits and the access log count: the peer, or behind trusted
    /// proxies the address they forwarded for.
    pub(super) client: IpAddr,
    /// The peer is a trusted proxy (see [`GatewayConfig::trusted_callers`](super::GatewayConfig::trusted_callers)).
    pub(super) trusted: bool,
    /// The routes, keys and settings in force when the request came.
    pub(super) dynamic: Arc<Dynamic>,
    pub(super) method: Method,
    /// The path, normalised when it could be (see `normalized_path`).
    pub(super) path: Cow<'a, str>,
    /// Why the path does not normalise, when it does not.
    pub(super) unnormal: Option<&'static str>,
    /// The request id: one header value serves the upstream request and the answer.
    pub(super) request_id: HeaderValue,
    /// What the gateway did, filled in step by step.
    pub(super) info: ProxyInfo,
    /// The exported span of an admitted request, when trace export is on: its id is the
    /// parent the upstream sees.
    pub(super) span: Option<crate::telemetry::Span>,
}

impl RequestContext<'_> {
    /// The request id as text.
    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// What the steps before forwarding settled about a request they let through.
pub(super) struct Admitted {
    pub(super) matched: RouteMatch,
    pub(super) identity: Option<Arc<Identity>>,
    /// The rate-limit decision, none on a route without limits.
    pub(super) decision: Option<RateDecision>,
}

impl Gateway {
    /// The context a request's steps share: its normalised path, whether its peer is
    /// trusted, the client behind it, and its request id (the caller's when the caller
    /// is trusted and the id printable and short, else a new one).
    pub(super) fn context<'a>(
        &self,
        (method, uri, headers): (&Method, &'a http::Uri, &http::HeaderMap),
        facts: &Facts<'_>,
        client_ip: IpAddr,
        started: Instant,
    ) -> RequestContext<'a> {
        // Routed and sent upstream normalised (see `normalized_path`); a path that does
        // not normalise is answered 400 by `route`.
        let (path, unnormal) = match normalized_path(uri.path()) {
            Ok(normal) => (normal, None),
            Err(reason) => (Cow::Borrowed(uri.path()), Some(reason)),
        };
        let dynamic = self.current();
        let trusted = dynamic.config.trusts(client_ip);
        // Rate limits and the access log count the client behind trusted proxies.
        let client = if trusted {
            dynamic.config.real_client(client_ip, headers)
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
        let request_id = given.unwrap_or_else(|| {
            let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
            HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
        });
        RequestContext {
            started,
            peer: client_ip,
            client,
            trusted,
            dynamic,
            method: method.clone(),
            path,
            unnormal,
            request_id,
            info: ProxyInfo {
                client: Some(client),
                ..ProxyInfo::default()
            },
            span: None,
        }
    }

    /// Route, authenticate and rate-limit a request: what forwarding it needs, or the
    /// answer refusing it.
    pub(super) async fn admit(
        &self,
        cx: &mut RequestContext<'_>,
        parts: &http::request::Parts,
        facts: &Facts<'_>,
    ) -> std::result::Result<Admitted, Answer> {
        let matched = self
            .route(cx, parts, facts)
            .map_err(|refused| Answer::from(*refused))?;
        let identity = Self::identify(&cx.dynamic, &matched.route, facts)
            .map_err(|refused| Answer::from(*refused))?;
        let route = &*cx.info.route;
        let decision = self
            .limit(&matched.route, route, identity.as_deref(), cx.client)
            .await;
        if let Some(decision) = &decision {
            cx.info.rate_limit_degraded = decision.degraded;
            if !decision.allowed {
                return Err(rejected(decision, cx.request_id()));
            }
        }
        Ok(Admitted {
            matched,
            identity,
            decision,
        })
    }

    /// The route a request takes, its names noted in the record; or the answer refusing
    /// it: 400 for a missing or doubled `Host` or a path that does not normalise, 404
    /// without a route, 405 for a method the route does not allow.
    fn route(
        &self,
        cx: &mut RequestContext<'_>,
        parts: &http::request::Parts,
        facts: &Facts<'_>,
    ) -> std::result::Result<RouteMatch, Refusal> {
        // RFC 9112 (3.2): an HTTP/1.1 request names its host once, in `Host` or in an
        // absolute target; which of two hosts a request meant is anyone's guess.
        let unnamed = facts.hosts == 0 && parts.uri.authority().is_none();
        if parts.version == http::Version::HTTP_11 && (unnamed || facts.hosts > 1) {
            let reason = "an HTTP/1.1 request needs exactly one Host header";
            return Err(Box::new(invalid("host", reason)));
        }
        if let Some(reason) = cx.unnormal {
            return Err(Box::new(invalid("path", reason)));
        }
        let path = &*cx.path;
        let Some(mut matched) = cx.dynamic.routes.find(path) else {
            let message = format!("no route for {path}");
            return Err(Box::new(error(
                StatusCode::NOT_FOUND,
                "not_found",
                &message,
            )));
        };
        let known;
        (matched.service, known) = self.resolve(&cx.dynamic, matched.service);
        if known || !matched.discovery {
            cx.info.route = matched.route.name.clone();
            cx.info.service = matched.service.clone();
        } else {
            // The name came from the client's path and nothing answers to it: the
            // metrics and the log record take one name for all such requests (the
            // logged path still says which), so made-up names add no series.
            cx.info.route = cx.dynamic.routes.unknown_route();
            cx.info.service = UNKNOWN_SERVICE.into();
        }
        let methods = &matched.route.methods;
        if !methods.is_empty() && !methods.contains(&parts.method) {
            let message = format!("{} is not allowed on {path}", parts.method);
            let status = StatusCode::METHOD_NOT_ALLOWED;
            return Err(Box::new(error(status, "method_not_allowed", &message)));
        }
        Ok(matched)
    }

    /// The caller of a request to a route that wants one (none on public routes), or
    /// the 401 refusing it.
    fn identify(
        dynamic: &Dynamic,
        spec: &RouteSpec,
        facts: &Facts<'_>,
    ) -> std::result::Result<Option<Arc<Identity>>, Refusal> {
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
}
