//! Forwarding with breakers, timeouts and budgeted retries; cache fills.

use super::answers::error;
use super::cache::CachedResponse;
use super::names::{X_CACHE, X_REQUEST_ID};
use super::pipeline::{Gateway, ProxyInfo};
use super::proxy::{strip_hop_by_hop, Target};
use super::routes::RouteMatch;
use super::{empty_body, full_body, BoxError, GatewayBody};
use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use std::sync::Arc;
use std::time::Duration;

pub(super) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The head of the request to `target` for `path` (the client's query kept), with the
/// upstream's `Host`; why not when it cannot be sent there (a 502).
pub(super) fn upstream_request(
    target: &Target,
    parts: &http::request::Parts,
    path: &str,
) -> Result<http::request::Builder, String> {
    if target.secure {
        return Err(format!(
            "`{}` is an https upstream; only http is proxied",
            target.origin
        ));
    }
    let uri = target
        .path(path, parts.uri.query())
        .map_err(|err| format!("cannot build the upstream URL: {err}"))?;
    let mut builder = Request::builder().method(parts.method.clone()).uri(uri);
    if let Some(headers) = builder.headers_mut() {
        headers.clone_from(&parts.headers);
        if let Some(host) = target.host_header() {
            headers.insert(http::header::HOST, host);
        }
    }
    Ok(builder)
}

pub(super) fn relay(response: Response<Incoming>) -> Response<GatewayBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(
        parts,
        body.map_err(|err| Box::new(err) as BoxError).boxed_unsync(),
    )
}

/// An answer from the cache (no body for HEAD).
pub(super) fn from_cache(hit: &CachedResponse, head: bool) -> Response<GatewayBody> {
    let body = if head {
        empty_body()
    } else {
        full_body(hit.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = hit.status;
    *response.headers_mut() = hit.headers.clone();
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static("HIT"));
    response
}

impl Gateway {
    /// A target for `service` that the breakers admit, avoiding `tried`: a discovered
    /// instance, else the static fallback. Also returns how many instances the service has.
    pub(super) fn pick(&self, service: &str, tried: &[String]) -> Option<(Arc<Target>, usize)> {
        let (picked, total) = self
            .view
            .choose(service, tried, |i| self.breakers.admit(service, &i.id));
        if let Some(instance) = picked {
            return Some((instance, total));
        }
        let dynamic = self.current();
        let fixed = dynamic.statics.get(service)?;
        (!tried.contains(&fixed.id) && self.breakers.admit(service, &fixed.id))
            .then(|| (fixed.clone(), total.max(1)))
    }

    pub(super) async fn forward(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        matched: &RouteMatch,
        info: &mut ProxyInfo,
    ) -> Response<GatewayBody> {
        let service = matched.service.as_str();
        let Some(mut target) = self.pick(service, &[]) else {
            let message = format!("no healthy instance of `{service}`");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
        };
        self.budget.deposit();
        // Only a request without a body can be sent again.
        let replayable = idempotent(&parts.method)
            && (body.is_end_stream() || body.size_hint().exact() == Some(0));
        let max_attempts = if replayable {
            self.current().config.max_attempts
        } else {
            1
        };
        let mut body = Some(body);
        let mut tried: Vec<String> = Vec::new();
        loop {
            info.attempts += 1;
            info.instance = Some(target.0.id.clone());
            let request = match upstream_request(&target.0, &parts, &matched.upstream_path) {
                Ok(head) => head.body(body.take().unwrap_or_else(empty_body)),
                Err(message) => return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message),
            };
            let request = match request {
                Ok(request) => request,
                Err(err) => {
                    let message = format!("cannot build the upstream request: {err}");
                    return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
                }
            };
            let sent = self.pool.send(&target.0.authority, request);
            let outcome = tokio::time::timeout(matched.route.timeout, sent).await;
            let failure = match outcome {
                Ok(Ok(mut response)) => {
                    let ok = !response.status().is_server_error();
                    self.breakers.record(service, &target.0.id, ok, target.1);
                    strip_hop_by_hop(response.headers_mut());
                    if ok || info.attempts >= max_attempts {
                        return response;
                    }
                    response
                }
                Ok(Err(err)) => {
                    self.breakers.record(service, &target.0.id, false, target.1);
                    tracing::debug!(error = %err, instance = %target.0.id, "upstream request failed");
                    let message = format!("the upstream of `{service}` failed to answer");
                    error(StatusCode::BAD_GATEWAY, "bad_gateway", &message)
                }
                Err(_) => {
                    self.breakers.record(service, &target.0.id, false, target.1);
                    let message = format!(
                        "the upstream of `{service}` did not answer within {} ms",
                        matched.route.timeout.as_millis()
                    );
                    error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message)
                }
            };
            if info.attempts >= max_attempts {
                return failure;
            }
            tried.push(target.0.id.clone());
            match self.pick(service, &tried) {
                Some(next) if self.budget.try_withdraw() => target = next,
                _ => return failure,
            }
        }
    }

    /// Buffer a cacheable answer (small enough, with a known length), store it and
    /// return it; anything else streams through untouched.
    pub(super) async fn store(
        &self,
        key: &super::cache::CacheKey,
        request: &HeaderMap,
        response: Response<GatewayBody>,
        route_ttl: Option<Duration>,
    ) -> Response<GatewayBody> {
        let small = response
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|len| len <= self.cache.config().max_entry_bytes);
        if response.status() != StatusCode::OK
            || !small
            || super::cache::cache_ttl(response.headers(), route_ttl).is_none()
        {
            return response;
        }
        let (parts, body) = response.into_parts();
        let bytes: Bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(err) => {
                tracing::debug!(error = %err, "upstream body failed while caching");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    "the upstream answer broke off",
                );
            }
        };
        let mut stored = parts.headers.clone();
        stored.remove(&X_REQUEST_ID);
        self.cache
            .store(key, request, parts.status, stored, bytes.clone(), route_ttl)
            .await;
        Response::from_parts(parts, full_body(bytes))
    }
}
