//! The answers the gateway makes itself: JSON errors, 429s, rate-limit headers, and the
//! identity it forwards.

use super::full_body;
use super::h1::SetHeader;
use super::names::{
    RATELIMIT_LIMIT, RATELIMIT_REMAINING, RATELIMIT_RESET, X_RATELIMIT_LIMIT_DAY,
    X_RATELIMIT_LIMIT_HOUR, X_RATELIMIT_LIMIT_MINUTE, X_RATELIMIT_LIMIT_SECOND,
    X_RATELIMIT_REMAINING_DAY, X_RATELIMIT_REMAINING_HOUR, X_RATELIMIT_REMAINING_MINUTE,
    X_RATELIMIT_REMAINING_SECOND, X_RATELIMIT_STATUS,
};
use super::ratelimit::{RateDecision, Window};
use super::GatewayBody;
use http::header::HeaderValue;
use http::{Response, StatusCode};

/// A JSON error in the servers' shape: `{"error", "message", "details"}`.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<GatewayBody> {
    let body = serde_json::json!({"error": code, "message": message, "details": []});
    let mut res = Response::new(full_body(body.to_string()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub(super) fn rejected(decision: &RateDecision, request_id: &str) -> Response<GatewayBody> {
    if decision.degraded {
        let mut res = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limiter_unavailable",
            "the rate-limit store is unavailable and the gateway fails closed",
        );
        rate_headers(res.headers_mut(), decision);
        return res;
    }
    let body = serde_json::json!({"message": "API rate limit exceeded", "requestId": request_id});
    let mut res = Response::new(full_body(body.to_string()));
    *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = res.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::RETRY_AFTER,
        decision.retry_after_secs().into(),
    );
    rate_headers(headers, decision);
    res
}

pub(super) fn rate_headers(headers: &mut dyn SetHeader, decision: &RateDecision) {
    if decision.degraded {
        headers.set_value(X_RATELIMIT_STATUS, HeaderValue::from_static("degraded"));
        return;
    }
    for window in &decision.windows {
        let (limit, remaining) = match window.limit.window {
            Window::Second => (X_RATELIMIT_LIMIT_SECOND, X_RATELIMIT_REMAINING_SECOND),
            Window::Minute => (X_RATELIMIT_LIMIT_MINUTE, X_RATELIMIT_REMAINING_MINUTE),
            Window::Hour => (X_RATELIMIT_LIMIT_HOUR, X_RATELIMIT_REMAINING_HOUR),
            Window::Day => (X_RATELIMIT_LIMIT_DAY, X_RATELIMIT_REMAINING_DAY),
        };
        headers.set_number(limit, window.limit.max);
        headers.set_number(remaining, window.remaining());
    }
    if let Some(tightest) = decision.tightest() {
        headers.set_number(RATELIMIT_LIMIT, tightest.limit.max);
        headers.set_number(RATELIMIT_REMAINING, tightest.remaining());
        let reset = (tightest.reset_ms.max(1) as u64).div_ceil(1000);
        headers.set_number(RATELIMIT_RESET, reset);
    }
}
