//! The answers the gateway makes itself: JSON errors, 429s, rate-limit headers, and the
//! identity it forwards.

use super::full_body;
use super::h1::SetHeader;
use super::names::{rate, X_RATELIMIT_STATUS};
use super::ratelimit::{RateDecision, Window};
use super::GatewayBody;
use crate::ErrorBody;
use http::header::HeaderValue;
use http::{Response, StatusCode};

/// A JSON error in the servers' shape ([`ErrorBody`]).
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response<GatewayBody> {
    json(status, ErrorBody::new(code, message).to_json())
}

/// An answer of `status` with the JSON text `body`.
fn json(status: StatusCode, body: String) -> Response<GatewayBody> {
    let mut res = Response::new(full_body(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A 400 for a request whose `field` is wrong: `{"error": "validation_failed", ...}`
/// with the field and the reason in `details`, as the servers answer bad input.
pub(super) fn invalid(field: &str, reason: &str) -> Response<GatewayBody> {
    json(
        StatusCode::BAD_REQUEST,
        ErrorBody::invalid(field, reason).to_json(),
    )
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
    // Two lines a window (four windows at most), and three for the tightest.
    let mut lines = [("", 0); 11];
    let mut count = 0;
    let mut put = |name: &'static str, value: u64| {
        if let Some(line) = lines.get_mut(count) {
            *line = (name, value);
            count += 1;
        }
    };
    for window in &decision.windows {
        let [limit, remaining] = match window.limit.window {
            Window::Second => rate::SECOND,
            Window::Minute => rate::MINUTE,
            Window::Hour => rate::HOUR,
            Window::Day => rate::DAY,
        };
        put(limit, window.limit.max);
        put(remaining, window.remaining());
    }
    if let Some(tightest) = decision.tightest() {
        put(rate::LIMIT, tightest.limit.max);
        put(rate::REMAINING, tightest.remaining());
        put(
            rate::RESET,
            (tightest.reset_ms.max(1) as u64).div_ceil(1000),
        );
    }
    headers.set_numbers(&lines[..count]);
}
