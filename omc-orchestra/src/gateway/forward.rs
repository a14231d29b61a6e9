//! Forwarding with breakers, timeouts and budgeted retries; cache fills.

use super::answers::error;
use super::cache::CachedResponse;
use super::h1::{hold_whole, put_head, whole, Answer};
use super::http1::strip_hop_by_hop;
use super::names::{X_CACHE, X_REQUEST_ID};
use super::pipeline::{Gateway, Outbound};
use super::proxy::Target;
use super::rewrite::Rewrite;
use super::routes::RouteMatch;
use super::{empty_body, full_body, BoxError, GatewayBody, UpstreamError};
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
    plain(target)?;
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

/// Why `target` cannot be proxied to: it speaks https.
fn plain(target: &Target) -> Result<(), String> {
    if target.secure {
        return Err(format!(
            "`{}` is an https upstream; only http is proxied",
            target.origin
        ));
    }
    Ok(())
}

/// The head of the request to `target` for `path` (the client's query kept), with the
/// upstream's `Host`, the client's headers as `rewrite` has them, and a body of `length`
/// bytes (chunked when unknown), in wire form; why not when it cannot be sent there (a
/// 502).
fn upstream_head(
    target: &Target,
    parts: &http::request::Parts,
    path: &str,
    length: Option<u64>,
    rewrite: &Rewrite<'_>,
) -> Result<Vec<u8>, String> {
    plain(target)?;
    let query = parts.uri.query();
    let pieces = [
        target.base_path.as_str(),
        path,
        if query.is_some() { "?" } else { "" },
        query.unwrap_or_default(),
    ];
    // The client's lines, and room for the request line and those the rewrite adds
    // (identity, trace, forwarding): most heads then fit the allocator's small sizes.
    let lines: usize = parts
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut head = Vec::with_capacity(lines + path.len() + 512);
    let host = Some(&*target.authority);
    put_head(
        &mut head,
        &parts.method,
        &pieces,
        host,
        &parts.headers,
        length,
        Some(rewrite),
    );
    Ok(head)
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
    pub(super) fn pick(&self, service: &str, tried: &[Arc<str>]) -> Option<(Arc<Target>, usize)> {
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

    /// Forward the request to an instance of the matched service, again to another
    /// while attempts, the budget and the method allow.
    pub(super) async fn forward(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        out: &mut Outbound<'_>,
    ) -> Answer {
        let matched = out.matched;
        let service = &*matched.service;
        let Some(mut target) = self.pick(service, &[]) else {
            let message = format!("no healthy instance of `{service}`");
            return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message).into();
        };
        self.budget.deposit();
        // A body small enough to hold goes out with the head in one write; only such a
        // request can be sent again.
        let body = match hold_whole(body).await {
            Ok(held) => held,
            Err(err) => {
                tracing::debug!(error = %err, "the request body broke off");
                let message = "the request body could not be read";
                return error(StatusCode::BAD_REQUEST, "bad_request", message).into();
            }
        };
        let body = match body {
            Ok(bytes) => bytes,
            Err(streamed) => {
                // Boxed: the rare streamed path would otherwise add its state (some
                // 660 bytes) to every request's, which each caller up the chain copies.
                let streamed = self.forward_streamed(parts, streamed, target, out);
                return Box::pin(streamed).await;
            }
        };
        let max_attempts = if idempotent(&parts.method) {
            out.max_attempts
        } else {
            1
        };
        let mut tried: Vec<Arc<str>> = Vec::new();
        // The first attempt starts with the request: the clock is not read again.
        let mut attempt_started = out.started;
        loop {
            out.info.attempts += 1;
            out.info.instance = Some(target.0.id.clone());
            let length = Some(body.len() as u64);
            let path = &matched.upstream_path;
            let whole = match upstream_head(&target.0, &parts, path, length, out.rewrite) {
                Ok(head) => whole(head, parts.method.clone(), &body),
                Err(message) => {
                    return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message).into()
                }
            };
            let deadline = tokio::time::Instant::from_std(attempt_started + matched.route.timeout);
            let authority = &target.0.authority;
            let sent = self
                .pool
                .send_whole(authority, &whole, attempt_started, Some(deadline));
            let outcome = sent.await;
            let (failure, ok) = self.settle(outcome, service, &target, matched);
            if ok {
                return failure;
            }
            if out.info.attempts >= max_attempts {
                return failure;
            }
            tried.push(target.0.id.clone());
            match self.pick(service, &tried) {
                Some(next) if self.budget.try_withdraw() => target = next,
                _ => return failure,
            }
            attempt_started = std::time::Instant::now();
        }
    }

    /// Forward a request whose body streams: one attempt, as it cannot be sent again.
    async fn forward_streamed(
        &self,
        parts: http::request::Parts,
        body: GatewayBody,
        target: (Arc<Target>, usize),
        out: &mut Outbound<'_>,
    ) -> Answer {
        let matched = out.matched;
        out.info.attempts += 1;
        out.info.instance = Some(target.0.id.clone());
        let length = body.size_hint().exact();
        let path = &matched.upstream_path;
        let head = match upstream_head(&target.0, &parts, path, length, out.rewrite) {
            Ok(head) => head,
            Err(message) => return error(StatusCode::BAD_GATEWAY, "bad_gateway", &message).into(),
        };
        let sent = self
            .pool
            .send_streamed(&target.0.authority, &head, &parts.method, body);
        let outcome = tokio::time::timeout(matched.route.timeout, sent).await;
        let outcome = outcome.unwrap_or(Err(UpstreamError::TimedOut));
        self.settle(outcome, &matched.service, &target, matched).0
    }

    /// Record an attempt's outcome with the breakers. The answer comes with whether it
    /// succeeded; a failed one (an upstream 5xx, or a 502/504 of the gateway's) is given
    /// only should no other attempt be made.
    fn settle(
        &self,
        outcome: Result<Answer, UpstreamError>,
        service: &str,
        target: &(Arc<Target>, usize),
        matched: &RouteMatch,
    ) -> (Answer, bool) {
        match outcome {
            // The answer's headers come sorted: its hop-by-hop ones are already out.
            Ok(answer) => {
                let ok = !answer.status().is_server_error();
                self.breakers.record(service, &target.0.id, ok, target.1);
                (answer, ok)
            }
            // The client's body broke off or stalled: the client's fault, not the
            // upstream's, so the breaker does not hear of it.
            Err(UpstreamError::Body(err)) => {
                tracing::debug!(error = %err, "the request body failed on its way upstream");
                // The idle deadline's error may come wrapped by the layers the body
                // went through: look down the chain of sources.
                let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
                let mut stalled = false;
                while let Some(error) = cause {
                    let timed_out = error
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
                    stalled |= timed_out;
                    cause = error.source();
                }
                let answer = if stalled {
                    let message = "the request body stalled past the idle deadline";
                    error(StatusCode::REQUEST_TIMEOUT, "request_timeout", message)
                } else {
                    let message = "the request body broke off before its end";
                    error(StatusCode::BAD_REQUEST, "bad_request", message)
                };
                (answer.into(), false)
            }
            Err(UpstreamError::TimedOut) => {
                self.breakers.record(service, &target.0.id, false, target.1);
                let message = format!(
                    "the upstream of `{service}` did not answer within {} ms",
                    matched.route.timeout.as_millis()
                );
                let answer = error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message);
                (answer.into(), false)
            }
            Err(err) => {
                self.breakers.record(service, &target.0.id, false, target.1);
                tracing::debug!(error = %err, instance = %target.0.id, "upstream request failed");
                let message = format!("the upstream of `{service}` failed to answer");
                let answer = error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
                (answer.into(), false)
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
