//! Header names the gateway reads and writes on every request, built once: a name given
//! as a string is parsed again at each use.

use http::HeaderName;

macro_rules! names {
    ($($name:ident = $text:literal;)*) => {
        $(
            #[doc = concat!("`", $text, "`")]
            pub(crate) const $name: HeaderName = HeaderName::from_static($text);
        )*
    };
}

names! {
    X_REQUEST_ID = "x-request-id";
    X_USER_ID = "x-user-id";
    X_USER_ROLES = "x-user-roles";
    X_API_KEY = "x-api-key";
    TRACEPARENT = "traceparent";
    X_FORWARDED_FOR = "x-forwarded-for";
    X_FORWARDED_PROTO = "x-forwarded-proto";
    X_FORWARDED_HOST = "x-forwarded-host";
    X_CACHE = "x-cache";
    X_RATELIMIT_STATUS = "x-ratelimit-status";
}

/// The names of the numeric rate-limit headers, lowercase, written as a batch (see
/// `WireHeaders::set_numbers`) rather than one header value at a time.
pub(crate) mod rate {
    /// `X-RateLimit-Limit-<Window>` and `X-RateLimit-Remaining-<Window>`, by window.
    pub(crate) const SECOND: [&str; 2] =
        ["x-ratelimit-limit-second", "x-ratelimit-remaining-second"];
    /// The minute's.
    pub(crate) const MINUTE: [&str; 2] =
        ["x-ratelimit-limit-minute", "x-ratelimit-remaining-minute"];
    /// The hour's.
    pub(crate) const HOUR: [&str; 2] = ["x-ratelimit-limit-hour", "x-ratelimit-remaining-hour"];
    /// The day's.
    pub(crate) const DAY: [&str; 2] = ["x-ratelimit-limit-day", "x-ratelimit-remaining-day"];
    /// `RateLimit-Limit`.
    pub(crate) const LIMIT: &str = "ratelimit-limit";
    /// `RateLimit-Remaining`.
    pub(crate) const REMAINING: &str = "ratelimit-remaining";
    /// `RateLimit-Reset`.
    pub(crate) const RESET: &str = "ratelimit-reset";
}
