//! The gateway's configuration, as the `[gateway]` table of the TOML file holds it.

use super::auth::AuthConfig;
use super::breaker::BreakerConfig;
use super::cache::CacheConfig;
use crate::redact::redact;
use crate::{Error, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Everything the gateway can be told.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Configured routes; they win over discovery routes (longest prefix first).
    pub routes: Vec<RouteConfig>,
    /// The `/api/{service}/...` routes served by discovery.
    pub discovery: DiscoveryRoutes,
    /// Static upstream base URLs by service name, used when discovery knows no instance
    /// (filled from `<NAME>_SERVICE_URL` by [`GatewayConfig::static_services_from_env`]).
    pub static_services: BTreeMap<String, String>,
    /// Authentication: JWT keys and API keys.
    pub auth: AuthConfig,
    /// Rate-limit backend and failure policy.
    pub rate_limit: RateLimitConfig,
    /// Circuit breakers.
    pub breaker: BreakerConfig,
    /// Response cache.
    pub cache: CacheConfig,
    /// Most attempts per request (1 = no retries); retries need an idempotent method and
    /// an empty body.
    pub max_attempts: u32,
    /// Retries may add at most this share of load, in percent.
    pub retry_budget_percent: u32,
    /// Seconds between full resyncs of the local registry view (the watch keeps it fresh
    /// in between).
    pub resync_secs: u64,
    /// Also write one access record per request to the log store (searchable on the
    /// logging server).
    pub access_log: bool,
    /// Threads serving the gateway's port, each with its own listening socket and
    /// upstream connections (0: one per CPU core). Read at start only.
    pub workers: usize,
    /// Callers (address ranges) whose `X-Request-Id` the gateway keeps; any other
    /// caller's is replaced by a new one, so that a client on the outside cannot pick the
    /// ids the deployment's logs and traces are joined by. Default: loopback and the
    /// private ranges (the deployment's own services); `[]` trusts no caller,
    /// `["0.0.0.0/0", "::/0"]` every one.
    pub trusted_callers: Vec<IpNet>,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A static upstream URL may carry credentials (`http://user:pw@legacy:8080`).
        let static_services: BTreeMap<&str, String> = self
            .static_services
            .iter()
            .map(|(service, url)| (service.as_str(), redact(url)))
            .collect();
        f.debug_struct("GatewayConfig")
            .field("routes", &self.routes)
            .field("discovery", &self.discovery)
            .field("static_services", &static_services)
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("breaker", &self.breaker)
            .field("cache", &self.cache)
            .field("max_attempts", &self.max_attempts)
            .field("retry_budget_percent", &self.retry_budget_percent)
            .field("resync_secs", &self.resync_secs)
            .field("access_log", &self.access_log)
            .field("workers", &self.workers)
            .field("trusted_callers", &self.trusted_callers)
            .finish()
    }
}

/// Loopback and the private ranges of IPv4 and IPv6.
fn internal_ranges() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "::1/128",
        "fc00::/7",
    ]
    .iter()
    .filter_map(|range| range.parse().ok())
    .collect()
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            discovery: DiscoveryRoutes::default(),
            static_services: BTreeMap::new(),
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            breaker: BreakerConfig::default(),
            cache: CacheConfig::default(),
            max_attempts: 2,
            retry_budget_percent: 20,
            resync_secs: 10,
            access_log: false,
            workers: 0,
            trusted_callers: internal_ranges(),
        }
    }
}

/// The discovery routes: `{prefix}/{service}/rest` goes to `{service}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryRoutes {
    /// Serve discovery routes at all.
    pub enabled: bool,
    /// The path prefix (`/api`).
    pub prefix: String,
    /// Forward `/rest` instead of `{prefix}/{service}/rest`.
    pub strip_prefix: bool,
    /// Upstream timeout in milliseconds.
    pub timeout_ms: u64,
    /// Require authentication.
    pub auth: bool,
    /// Rate limits, per service and consumer.
    pub limits: Limits,
    /// Cache GET/HEAD answers this long unless the upstream says otherwise.
    pub cache_ttl_secs: Option<u64>,
}

impl Default for DiscoveryRoutes {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: "/api".into(),
            strip_prefix: true,
            timeout_ms: 30_000,
            auth: false,
            limits: Limits::default(),
            cache_ttl_secs: None,
        }
    }
}

/// One configured route.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Name in metrics, logs and rate-limit keys (the prefix when empty).
    pub name: String,
    /// Path prefix, matched on whole segments (`/pricing` matches `/pricing/x`, not
    /// `/pricingx`).
    pub prefix: String,
    /// The service that serves it.
    pub service: String,
    /// Forward the path without the prefix.
    pub strip_prefix: bool,
    /// Allowed methods; empty allows all.
    pub methods: Vec<String>,
    /// Upstream timeout in milliseconds (the discovery routes' when absent).
    pub timeout_ms: Option<u64>,
    /// Require authentication (`false` makes a public route).
    pub auth: bool,
    /// Rate limits, per consumer.
    pub limits: Limits,
    /// Cache GET/HEAD answers this long unless the upstream says otherwise.
    pub cache_ttl_secs: Option<u64>,
}

impl Default for RouteConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            prefix: String::new(),
            service: String::new(),
            strip_prefix: true,
            methods: Vec::new(),
            timeout_ms: None,
            auth: false,
            limits: Limits::default(),
            cache_ttl_secs: None,
        }
    }
}

/// Request limits per window; absent windows are unlimited.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Per second.
    pub second: Option<u64>,
    /// Per minute.
    pub minute: Option<u64>,
    /// Per hour.
    pub hour: Option<u64>,
    /// Per day.
    pub day: Option<u64>,
}

impl Limits {
    /// True when no window is limited.
    pub fn is_empty(&self) -> bool {
        self.second.is_none() && self.minute.is_none() && self.hour.is_none() && self.day.is_none()
    }
}

/// Where rate-limit counters live and what happens when that store fails.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Share counters through Redis when the server has one (else in-process).
    pub redis: bool,
    /// Let requests through when the counter store is unreachable (else reject with 503).
    pub fail_open: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            redis: true,
            fail_open: true,
        }
    }
}

/// An address of `X-Forwarded-For`: bare, or with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`), as some proxies write it.
fn forwarded_address(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
];

impl GatewayConfig {
    /// Whether `caller`'s own request id is kept (see
    /// [`GatewayConfig::trusted_callers`]); an IPv4 address written as IPv6 counts as
    /// IPv4.
    pub fn trusts(&self, caller: IpAddr) -> bool {
        let caller = caller.to_canonical();
        self.trusted_callers
            .iter()
            .any(|range| range.contains(&caller))
    }

    /// The client a request from `peer` was made for: behind trusted proxies, the
    /// right-most address of `X-Forwarded-For` that is not itself trusted, as nginx's
    /// `real_ip_recursive` reads it (the left-most address when all are trusted, and the
    /// last one read when the next is not an address). From an untrusted peer, whose list
    /// could be forged, the peer itself.
    pub fn real_client(&self, peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let lines = headers.get_all(super::names::X_FORWARDED_FOR);
        for line in lines.iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for hop in line.rsplit(',') {
                let Some(address) = forwarded_address(hop.trim()) else {
                    return client;
                };
                client = address.to_canonical();
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }

    /// Check the configuration; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.discovery.enabled && !valid_prefix(&self.discovery.prefix) {
            return Err(Error::invalid(
                "gateway.discovery.prefix",
                "must start with `/` and not end with `/`",
            ));
        }
        for (index, route) in self.routes.iter().enumerate() {
            let field = |name: &str| format!("gateway.routes[{index}].{name}");
            if !valid_prefix(&route.prefix) && route.prefix != "/" {
                return Err(Error::invalid(
                    field("prefix"),
                    "must start with `/` and not end with `/`",
                ));
            }
            if route.service.trim().is_empty() {
                return Err(Error::invalid(field("service"), "must not be empty"));
            }
            if let Some(bad) = route
                .methods
                .iter()
                .find(|m| !METHODS.contains(&m.to_ascii_uppercase().as_str()))
            {
                return Err(Error::invalid(
                    field("methods"),
                    format!("unknown method `{bad}`"),
                ));
            }
            if route.timeout_ms == Some(0) {
                return Err(Error::invalid(field("timeoutMs"), "must be at least 1"));
            }
        }
        for (service, url) in &self.static_services {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<http::Uri>().is_err()
            {
                return Err(Error::invalid(
                    format!("gateway.staticServices.{service}"),
                    format!("`{}` is not an http(s) URL", redact(url)),
                ));
            }
        }
        // With no keys an authenticated route would refuse everyone; say so at load.
        let has_keys = self
            .auth
            .jwt_secret
            .as_deref()
            .is_some_and(|s| !s.is_empty())
            || self.auth.rsa_public_key_pem.is_some()
            || self.auth.ec_public_key_pem.is_some()
            || !self.auth.api_keys.is_empty();
        if !has_keys {
            let needs = self
                .routes
                .iter()
                .position(|r| r.auth)
                .map(|i| format!("gateway.routes[{i}].auth"))
                .or_else(|| {
                    self.discovery
                        .auth
                        .then(|| "gateway.discovery.auth".to_owned())
                });
            if let Some(field) = needs {
                return Err(Error::invalid(
                    field,
                    "needs end-user keys in [gateway.auth] (jwt_secret, a public key or \
                     api_keys); the control plane's JWT_SECRET is never used for gateway routes",
                ));
            }
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid("gateway.maxAttempts", "must be at least 1"));
        }
        if self.resync_secs == 0 {
            return Err(Error::invalid("gateway.resyncSecs", "must be at least 1"));
        }
        self.breaker.validate()
    }

    /// Static fallbacks from environment variables: `PRICING_SERVICE_URL=http://h:3006`
    /// serves `pricing-service`, `USER_PROFILE_SERVICE_URL` serves `user-profile-service`.
    pub fn static_services_from_env(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> BTreeMap<String, String> {
        vars.into_iter()
            .filter_map(|(key, value)| {
                let name = key.strip_suffix("_SERVICE_URL")?;
                if name.is_empty() || value.trim().is_empty() {
                    return None;
                }
                let service = format!("{}-service", name.to_ascii_lowercase().replace('_', "-"));
                Some((service, value.trim().trim_end_matches('/').to_owned()))
            })
            .collect()
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix.starts_with('/') && prefix.len() > 1 && !prefix.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_client_is_the_right_most_untrusted_forwarded_address() {
        let config = GatewayConfig::default();
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let client = |lines: &[&str]| {
            let mut headers = http::HeaderMap::new();
            for line in lines {
                headers.append("x-forwarded-for", line.parse().unwrap());
            }
            config.real_client(proxy, &headers).to_string()
        };
        assert_eq!(client(&[]), "10.0.0.5");
        assert_eq!(client(&["203.0.113.9"]), "203.0.113.9");
        assert_eq!(client(&["203.0.113.9, 10.0.0.4"]), "203.0.113.9");
        // A client may write anything on the left: only the right-most untrusted counts.
        assert_eq!(client(&["198.51.100.1, 203.0.113.9"]), "203.0.113.9");
        assert_eq!(
            client(&["198.51.100.1", "203.0.113.9, 10.1.1.1"]),
            "203.0.113.9"
        );
        assert_eq!(client(&["10.0.0.7, 10.0.0.4"]), "10.0.0.7");
        assert_eq!(client(&["unknown, 10.0.0.4"]), "10.0.0.4");
        assert_eq!(client(&["[2001:db8::1]:443"]), "2001:db8::1");
        assert_eq!(client(&["203.0.113.9:51234"]), "203.0.113.9");
        assert_eq!(client(&["::ffff:203.0.113.9"]), "203.0.113.9");
        // From a caller outside the trusted ranges, the list could be forged.
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        let outside: IpAddr = "198.51.100.77".parse().unwrap();
        assert_eq!(config.real_client(outside, &headers), outside);
    }

    #[test]
    fn env_names_map_to_services() {
        let vars = [
            ("PRICING_SERVICE_URL", "http://pricing-service:3006/"),
            ("USER_PROFILE_SERVICE_URL", "http://u:1"),
            ("SERVICE_REGISTRY_URL", "http://r:3010"),
            ("_SERVICE_URL", "http://x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let found = GatewayConfig::static_services_from_env(vars);
        assert_eq!(found.len(), 2);
        assert_eq!(found["pricing-service"], "http://pricing-service:3006");
        assert_eq!(found["user-profile-service"], "http://u:1");
    }

    #[test]
    fn validation_names_the_field() {
        let mut config = GatewayConfig::default();
        config.routes.push(RouteConfig {
            prefix: "/p".into(),
            service: "p".into(),
            methods: vec!["FETCH".into()],
            ..RouteConfig::default()
        });
        match config.validate() {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "gateway.routes[0].methods"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn static_service_passwords_stay_out_of_debug_and_errors() {
        let mut config = GatewayConfig::default();
        config.static_services.insert(
            "legacy-service".into(),
            "http://app:hunter2@legacy:8080".into(),
        );
        let shown = format!("{config:?}");
        assert!(shown.contains("http://app:***@legacy:8080"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        config
            .static_services
            .insert("odd-service".into(), "ftp://app:hunter2@files".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("ftp://app:***@files"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn route_fields_parse_with_defaults() {
        // The server parses TOML; the same serde shape is checked here through JSON.
        let mut config: GatewayConfig = serde_json::from_value(serde_json::json!({
            "routes": [{"prefix": "/prices", "service": "pricing-service", "methods": ["GET"],
                        "timeout_ms": 500, "auth": true, "cache_ttl_secs": 30,
                        "limits": {"second": 10, "minute": 100}}]
        }))
        .unwrap();
        assert_eq!(config.routes[0].limits.second, Some(10));
        assert!(config.routes[0].strip_prefix);
        match config.validate() {
            Err(Error::Invalid { field, reason }) => {
                assert_eq!(field, "gateway.routes[0].auth");
                assert!(reason.contains("JWT_SECRET"), "{reason}");
            }
            other => panic!("an authenticated route without keys loaded: {other:?}"),
        }
        config.auth.jwt_secret = Some("end-user-secret".into());
        config.validate().unwrap();
    }
}
