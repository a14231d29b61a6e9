//! The API gateway's engines: routing over a local view of the registry, an HTTP proxy
//! with pooled keep-alive connections, a circuit breaker per upstream instance, rate
//! limits (in-process or shared through Redis), JWT and API-key authentication, a
//! response cache and W3C trace propagation.
//!
//! [`Gateway`] composes them into one request pipeline; the `orchestra` server serves it
//! on port 3000, and a custom gateway can embed the same [`Gateway`] (or any engine
//! alone) behind its own router.

mod access_log;
mod admit;
mod answers;
mod auth;
mod breaker;
mod cache;
mod config;
mod forward;
pub mod h1;
mod http1;
mod names;
mod pipeline;
mod pool;
mod proxy;
mod ratelimit;
mod retry;
pub(crate) mod rewrite;
mod routes;
mod upgrade;
mod view;

pub use crate::telemetry::{next_traceparent, TraceParent};
pub use access_log::AccessLog;
pub use auth::{ApiKey, AuthConfig, AuthFailure, Authenticator, Identity, API_KEY_HEADER};
pub use breaker::{BreakerConfig, BreakerPhase, BreakerState, Breakers};
#[cfg(feature = "redis")]
pub use cache::RedisCacheStore;
pub use cache::{
    cache_ttl, CacheConfig, CacheKey, CacheStore, CachedResponse, FillGuard, MemoryCacheStore,
    ResponseCache,
};
pub use config::{DiscoveryRoutes, GatewayConfig, Limits, RateLimitConfig, RouteConfig};
pub use http1::strip_hop_by_hop;
pub use pipeline::{Gateway, ProxyInfo};
pub use pool::{PoolOptions, UpstreamError, UpstreamPool};
pub use proxy::Target;
#[cfg(feature = "redis")]
pub use ratelimit::RedisRateLimits;
pub use ratelimit::{
    Limit, MemoryRateLimits, RateDecision, RateLimitStore, RateLimiter, Window, WindowCount,
};
pub use retry::RetryBudget;
pub use routes::{RouteMatch, RouteSpec, RouteTable, UNKNOWN_SERVICE};
pub use view::ServiceView;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors carried by streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type the gateway takes and returns: streamed, boxed.
pub type GatewayBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full_body(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty_body() -> GatewayBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

#[cfg(feature = "fuzzing")]
pub(crate) use h1::{fuzz_chunked_body, fuzz_request_head};

/// Normalise `text` as a request path; a normal path must normalise to itself.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_path(text: &str) {
    if let Ok(normal) = routes::normalized_path(text) {
        assert_eq!(routes::normalized_path(&normal).as_deref(), Ok(&*normal));
        assert!(
            !normal.contains("//") || !text.starts_with('/'),
            "{text:?} gave {normal:?}"
        );
    }
}
