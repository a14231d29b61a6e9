//! The answers the gateway makes itself: JSON errors, 429s, rate-limit headers, and the
//! identity it forwards.

use super::full_body;
use super::h1::{Answer, WireHeaders};
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

/// The answer refusing a request the rate limits did not allow (or, with the limits'
/// store down and the gateway failing closed, could not count): 429 or 503, with the
/// rate-limit headers.
pub(super) fn rejected(decision: &RateDecision, request_id: &str) -> Answer {
    let mut answer = if decision.degraded {
        Answer::from(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "rate_limiter_unavailable",
            "the rate-limit store is unavailable and the gateway fails closed",
        ))
    } else {
        let body =
            serde_json::json!({"message": "API rate limit exceeded", "requestId": request_id});
        let mut res = json(StatusCode::TOO_MANY_REQUESTS, body.to_string());
        res.headers_mut().insert(
            http::header::RETRY_AFTER,
            decision.retry_after_secs().into(),
        );
        Answer::from(res)
    };
    rate_headers(&mut answer.headers, decision);
    answer
}

/// Add the rate-limit headers of `decision` to `headers`.
pub(super) fn rate_headers(headers: &mut WireHeaders, decision: &RateDecision) {
    if decision.degraded {
        headers.set(&X_RATELIMIT_STATUS, b"degraded");
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
