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
    X_RATELIMIT_LIMIT_SECOND = "x-ratelimit-limit-second";
    X_RATELIMIT_REMAINING_SECOND = "x-ratelimit-remaining-second";
    X_RATELIMIT_LIMIT_MINUTE = "x-ratelimit-limit-minute";
    X_RATELIMIT_REMAINING_MINUTE = "x-ratelimit-remaining-minute";
    X_RATELIMIT_LIMIT_HOUR = "x-ratelimit-limit-hour";
    X_RATELIMIT_REMAINING_HOUR = "x-ratelimit-remaining-hour";
    X_RATELIMIT_LIMIT_DAY = "x-ratelimit-limit-day";
    X_RATELIMIT_REMAINING_DAY = "x-ratelimit-remaining-day";
    RATELIMIT_LIMIT = "ratelimit-limit";
    RATELIMIT_REMAINING = "ratelimit-remaining";
    RATELIMIT_RESET = "ratelimit-reset";
    KEEP_ALIVE = "keep-alive";
    PROXY_CONNECTION = "proxy-connection";
}
