//! Which route a request takes: configured prefixes first (longest wins), then the
//! discovery routes `{prefix}/{service}/rest`.

use super::config::{GatewayConfig, Limits};
use http::Method;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

/// What a matched route asks of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    /// The route's name (metrics, logs, rate-limit and cache keys).
    pub name: Arc<str>,
    /// Allowed methods; empty allows all.
    pub methods: Vec<Method>,
    /// Upstream timeout.
    pub timeout: Duration,
    /// Authentication required.
    pub auth: bool,
    /// Rate limits per consumer.
    pub limits: Limits,
    /// Cache GET/HEAD answers this long unless the upstream says otherwise.
    pub cache_ttl: Option<Duration>,
}

/// A request's route.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    /// The route.
    pub route: Arc<RouteSpec>,
    /// The service to forward to.
    pub service: Arc<str>,
    /// The path to send upstream (query not included).
    pub upstream_path: String,
    /// A discovery route (`{prefix}/{service}/...`), whose service name comes from the
    /// request's path rather than from the configuration.
    pub discovery: bool,
}

#[derive(Debug)]
struct Configured {
    prefix: String,
    service: Arc<str>,
    strip: bool,
    spec: Arc<RouteSpec>,
}

/// The gateway's routes, built once from its configuration.
#[derive(Debug)]
pub struct RouteTable {
    configured: Vec<Configured>,
    discovery: Option<(String, bool, RouteSpec)>,
    /// The discovery route of each service seen, built once (up to [`MOST_REMEMBERED`]).
    discovered: parking_lot::RwLock<std::collections::HashMap<String, Discovered>>,
    /// The name metrics and logs give a discovery request for a service no instance or
    /// static URL answers to: `{prefix}/{UNKNOWN_SERVICE}`.
    unknown: Arc<str>,
}

/// The service label of a discovery request for a service nothing answers to: any
/// name a client makes up in the path would otherwise be a metric series of its own.
/// Parentheses are not allowed in a registered service name, so no service has it.
pub const UNKNOWN_SERVICE: &str = "(unknown)";

/// A service's discovery route and its name, shared by the requests that take it.
type Discovered = (Arc<RouteSpec>, Arc<str>);

/// Discovery routes remembered; past this, a service's route is built per request.
const MOST_REMEMBERED: usize = 4096;

fn methods(list: &[String]) -> Vec<Method> {
    list.iter()
        .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
        .collect()
}

fn under<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    if prefix == "/" {
        return Some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

impl RouteTable {
    /// Routes from `config` (validated beforehand).
    pub fn new(config: &GatewayConfig) -> Self {
        let d = &config.discovery;
        let mut configured: Vec<Configured> = config
            .routes
            .iter()
            .map(|r| Configured {
                prefix: r.prefix.clone(),
                service: r.service.as_str().into(),
                strip: r.strip_prefix,
                spec: Arc::new(RouteSpec {
                    name: if r.name.is_empty() {
                        r.prefix.as_str().into()
                    } else {
                        r.name.as_str().into()
                    },
                    methods: methods(&r.methods),
                    timeout: Duration::from_millis(r.timeout_ms.unwrap_or(d.timeout_ms)),
                    auth: r.auth,
                    limits: r.limits,
                    cache_ttl: r.cache_ttl_secs.map(Duration::from_secs),
                }),
            })
            .collect();
        configured.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        let discovery = d.enabled.then(|| {
            (
                d.prefix.clone(),
                d.strip_prefix,
                RouteSpec {
                    name: "".into(),
                    methods: Vec::new(),
                    timeout: Duration::from_millis(d.timeout_ms),
                    auth: d.auth,
                    limits: d.limits,
                    cache_ttl: d.cache_ttl_secs.map(Duration::from_secs),
                },
            )
        });
        let unknown = format!("{}/{UNKNOWN_SERVICE}", d.prefix.trim_end_matches('/')).into();
        Self {
            configured,
            discovery,
            discovered: Default::default(),
            unknown,
        }
    }

    /// The route of `path`, or `None`. The method is checked by the caller against
    /// [`RouteSpec::methods`].
    pub fn find(&self, path: &str) -> Option<RouteMatch> {
        for route in &self.configured {
            if let Some(rest) = under(path, &route.prefix) {
                return Some(RouteMatch {
                    route: route.spec.clone(),
                    service: route.service.clone(),
                    upstream_path: if route.strip { rest } else { path }.to_owned(),
                    discovery: false,
                });
            }
        }
        let (prefix, strip, spec) = self.discovery.as_ref()?;
        let rest = under(path, prefix)?;
        let trimmed = rest.trim_start_matches('/');
        let (service, tail) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        if service.is_empty() {
            return None;
        }
        let known = self.discovered.read().get(service).cloned();
        let (route, service) = known.unwrap_or_else(|| {
            let route = Arc::new(RouteSpec {
                name: format!("{prefix}/{service}").into(),
                ..spec.clone()
            });
            let found: Discovered = (route, service.into());
            let mut discovered = self.discovered.write();
            if discovered.len() < MOST_REMEMBERED {
                discovered.insert(service.to_owned(), found.clone());
            }
            found
        });
        Some(RouteMatch {
            route,
            service,
            upstream_path: if *strip {
                let mut stripped = String::with_capacity(tail.len() + 1);
                stripped.push('/');
                stripped.push_str(tail);
                stripped
            } else {
                path.to_owned()
            },
            discovery: true,
        })
    }

    /// The route name metrics and logs give a discovery request for a service nothing
    /// answers to (see [`UNKNOWN_SERVICE`]).
    pub fn unknown_route(&self) -> Arc<str> {
        self.unknown.clone()
    }
}

/// `path` as routes match it and the upstream is asked for it (RFC 3986 §6.2.2):
/// percent-encoded unreserved characters decoded (`/%61dmin` is `/admin`), the hex digits
/// of other escapes in capitals, repeated slashes merged (`//admin` is `/admin`), then its
/// dot-segments resolved (see [`without_dot_segments`]). Borrowed when there is nothing
/// to do; an error, for a 400, when a `%` is not followed by two hex digits.
///
/// Without it `/%61dmin` or `//admin` would miss an authenticated `/admin` route, take a
/// more general public one, and reach an upstream that decodes and merges them itself.
pub(crate) fn normalized_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') && !bytes.windows(2).any(|pair| pair == b"//") {
        return Ok(without_dot_segments(path));
    }
    let hex = |at: usize| {
        bytes
            .get(at)
            .and_then(|c| char::from(*c).to_digit(16))
            .map(|d| d as u8)
    };
    let mut out: Vec<u8> = Vec::with_capacity(path.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let (Some(high), Some(low)) = (hex(at + 1), hex(at + 2)) else {
                    return Err("a `%` in the path must be followed by two hex digits");
                };
                let decoded = high * 16 + low;
                if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
                    out.push(decoded);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.extend_from_slice(&[b'%', HEX[usize::from(high)], HEX[usize::from(low)]]);
                }
                at += 3;
            }
            b'/' if out.last() == Some(&b'/') => at += 1,
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    // Only ASCII went in (a request target is ASCII), and escapes decode to ASCII only.
    let normal = String::from_utf8(out).map_err(|_| "the path is not ASCII")?;
    Ok(Cow::Owned(without_dot_segments(&normal).into_owned()))
}

/// `path` with its dot-segments (`.` and `..`, also written `%2e`) resolved as RFC 3986
/// resolves them, and `..` above the root dropped; borrowed when it has none.
///
/// Routes are matched on the result and it is what goes upstream: otherwise
/// `/public/../private/x` would take a public route's policies (no authentication, its
/// limits) to a path that the upstream, resolving the dots itself, serves as
/// `/private/x`.
pub(crate) fn without_dot_segments(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    // Only a `/` followed by `.` or `%` can start a dot-segment.
    let suspect = bytes
        .windows(2)
        .any(|pair| pair[0] == b'/' && matches!(pair[1], b'.' | b'%'));
    if !suspect || !path.split('/').any(|segment| dots(segment).is_some()) {
        return Cow::Borrowed(path);
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in path.split('/').skip(1) {
        trailing = true;
        match dots(segment) {
            Some(1) => {}
            Some(_) => {
                kept.pop();
            }
            None => {
                kept.push(segment);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing || kept.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// How many dots `segment` is when it is a dot-segment (`.`, `..`, a dot also written
/// `%2e` or `%2E`), else `None`.
fn dots(segment: &str) -> Option<usize> {
    let mut rest = segment.as_bytes();
    let mut count = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', e, tail @ ..] if e.eq_ignore_ascii_case(&b'e') => tail,
            _ => return None,
        };
        count += 1;
    }
    (1..=2).contains(&count).then_some(count)
}

#[cfg(test)]
#[path = "routes_props.rs"]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::RouteConfig;

    fn table() -> RouteTable {
        let mut config = GatewayConfig::default();
        for (prefix, service, strip) in [
            ("/prices", "pricing-service", true),
            ("/prices/special", "special", false),
        ] {
            config.routes.push(RouteConfig {
                prefix: prefix.into(),
                service: service.into(),
                strip_prefix: strip,
                ..RouteConfig::default()
            });
        }
        RouteTable::new(&config)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table();
        let m = t.find("/prices/special/x").unwrap();
        assert_eq!(
            (&*m.service, m.upstream_path.as_str()),
            ("special", "/prices/special/x")
        );
        let m = t.find("/prices/a/b").unwrap();
        assert_eq!(
            (&*m.service, m.upstream_path.as_str()),
            ("pricing-service", "/a/b")
        );
        assert_eq!(t.find("/prices").unwrap().upstream_path, "/");
        assert!(t.find("/pricesx").is_none());
    }

    #[test]
    fn dot_segments_are_resolved_before_routing() {
        for (raw, clean) in [
            ("/public/../private/x", "/private/x"),
            ("/public/%2e%2E/private/x", "/private/x"),
            ("/a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/..", "/"),
            ("/%2e", "/"),
            ("/a//b/../c", "/a//c"),
        ] {
            let resolved = without_dot_segments(raw);
            assert!(matches!(resolved, Cow::Owned(_)), "{raw}");
            assert_eq!(resolved, clean, "{raw}");
        }
        for untouched in [
            "/",
            "/a/b",
            "/a/.well-known/x",
            "/a/...",
            "/a/%2f..",
            "/a/b.",
            "/%2e%2e%2e",
        ] {
            assert!(
                matches!(without_dot_segments(untouched), Cow::Borrowed(p) if p == untouched),
                "{untouched}"
            );
        }
        for (raw, normal) in [
            ("/%61dmin/x", "/admin/x"),
            ("//admin//x", "/admin/x"),
            ("/a/%2e%2E/admin", "/admin"),
            ("/a/%7e%2fb%3a", "/a/~%2Fb%3A"),
            ("/a//b/../c", "/a/c"),
            ("/%41%5a%30-%5F", "/AZ0-_"),
        ] {
            assert_eq!(normalized_path(raw).unwrap(), normal, "{raw}");
        }
        for plain in ["/a/b", "/", "/a/b.c"] {
            assert!(
                matches!(normalized_path(plain), Ok(Cow::Borrowed(p)) if p == plain),
                "{plain}"
            );
        }
        for bad in ["/a%", "/a%2", "/a%zz", "/%g0"] {
            assert!(normalized_path(bad).is_err(), "{bad}");
        }
        let t = table();
        let m = t
            .find(&without_dot_segments("/prices/special/../x"))
            .unwrap();
        assert_eq!(
            (&*m.service, m.upstream_path.as_str()),
            ("pricing-service", "/x")
        );
    }

    #[test]
    fn discovery_routes_name_the_service() {
        let t = table();
        let m = t.find("/api/inventory-service/items/7").unwrap();
        assert_eq!(&*m.service, "inventory-service");
        assert_eq!(m.upstream_path, "/items/7");
        assert_eq!(&*m.route.name, "/api/inventory-service");
        assert_eq!(t.find("/api/inventory-service").unwrap().upstream_path, "/");
        assert!(m.discovery);
        assert!(!t.find("/prices/a").unwrap().discovery);
        assert_eq!(&*t.unknown_route(), "/api/(unknown)");
        assert!(t.find("/api/").is_none());
        assert!(t.find("/other").is_none());
    }
}
