//! The registry's model: what a service sends to register, and what the registry keeps.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most tags an instance may carry.
pub const MAX_TAGS: usize = 32;
/// Most dependencies an instance may name.
pub const MAX_DEPENDENCIES: usize = 32;
/// Most metadata entries an instance may carry.
pub const MAX_METADATA: usize = 64;
/// Longest tag, dependency, metadata key, version or type.
pub const MAX_SHORT_TEXT: usize = 128;
/// Longest metadata value.
pub const MAX_METADATA_VALUE: usize = 1024;
/// Longest service name or host.
pub const MAX_NAME: usize = 253;
/// Longest time-to-live a registration may ask for.
pub const MAX_TTL_SECONDS: i64 = 86_400;

/// What a service sends to `POST /registry/register`.
///
/// Numbers are taken wide (`i64`) so that an out-of-range value is reported by
/// [`Registration::validate`] with its field name instead of failing to parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// Service name, `[a-z0-9-]+` (e.g. `pricing-service`).
    pub name: String,
    /// The service's version.
    #[serde(default = "default_version")]
    pub version: String,
    /// Host name or address where the instance listens.
    pub host: String,
    /// Port, 1–65535.
    pub port: i64,
    /// Kind of service (`api`, `worker`, …).
    #[serde(rename = "type", default = "default_type")]
    pub service_type: String,
    /// Path of the instance's health endpoint, starting with `/`.
    #[serde(default = "default_health_endpoint")]
    pub health_endpoint: String,
    /// Free-form tags used for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Names of what the instance depends on (`postgres`, `redis`, a URL, …).
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Weight for load balancing, 1–1000 (default 1).
    #[serde(default)]
    pub weight: Option<i64>,
    /// Free-form string metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// An explicit instance id; derived from name, host and port when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// How long the instance stays healthy without a heartbeat (default 30 s).
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
}

fn default_version() -> String {
    "0.0.0".into()
}
fn default_type() -> String {
    "api".into()
}
fn default_health_endpoint() -> String {
    "/health".into()
}

impl Registration {
    /// A registration with the required fields and defaults for the rest.
    pub fn new(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            version: default_version(),
            host: host.into(),
            port: i64::from(port),
            service_type: default_type(),
            health_endpoint: default_health_endpoint(),
            tags: Vec::new(),
            dependencies: Vec::new(),
            weight: None,
            metadata: BTreeMap::new(),
            id: None,
            ttl_seconds: None,
        }
    }

    /// Check every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        check_name("name", &self.name)?;
        check_text("version", &self.version, MAX_SHORT_TEXT)?;
        check_host(&self.host)?;
        if !(1..=65_535).contains(&self.port) {
            return Err(Error::invalid("port", "must be between 1 and 65535"));
        }
        check_name("type", &self.service_type)?;
        if !self.health_endpoint.starts_with('/') {
            return Err(Error::invalid("healthEndpoint", "must start with `/`"));
        }
        check_text("healthEndpoint", &self.health_endpoint, 2048)?;
        check_list("tags", &self.tags, MAX_TAGS)?;
        check_list("dependencies", &self.dependencies, MAX_DEPENDENCIES)?;
        if let Some(weight) = self.weight {
            if !(1..=1000).contains(&weight) {
                return Err(Error::invalid("weight", "must be between 1 and 1000"));
            }
        }
        if self.metadata.len() > MAX_METADATA {
            return Err(Error::invalid(
                "metadata",
                format!("at most {MAX_METADATA} entries"),
            ));
        }
        for (key, value) in &self.metadata {
            check_text("metadata", key, MAX_SHORT_TEXT)?;
            if value.len() > MAX_METADATA_VALUE {
                return Err(Error::invalid(
                    format!("metadata.{key}"),
                    format!("at most {MAX_METADATA_VALUE} bytes"),
                ));
            }
        }
        if let Some(id) = &self.id {
            let ok = !id.is_empty()
                && id.len() <= MAX_SHORT_TEXT
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                return Err(Error::invalid(
                    "id",
                    "must be 1-128 characters of letters, digits, `-`, `_`, `.` or `:`",
                ));
            }
        }
        if let Some(ttl) = self.ttl_seconds {
            if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
                return Err(Error::invalid(
                    "ttlSeconds",
                    format!("must be between 1 and {MAX_TTL_SECONDS}"),
                ));
            }
        }
        Ok(())
    }

    /// The instance id: the explicit one, or one derived from name, host and port, so the
    /// same instance registering again (even against a restarted registry) keeps its id.
    pub fn instance_id(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => {
                let key = format!("{}|{}|{}", self.name, self.host, self.port);
                format!("{}-{:016x}", self.name, fnv1a(key.as_bytes()))
            }
        }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn check_text(field: &str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(Error::invalid(field, format!("at most {max} bytes")));
    }
    Ok(())
}

/// Check a service name (also a dependency's), reporting a bad one under `field`: 1 to
/// [`MAX_NAME`] lowercase letters, digits and `-`, the rule DNS labels and the gateway's
/// routes by name share.
pub fn check_name(field: &str, value: &str) -> Result<()> {
    check_text(field, value, MAX_NAME)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(Error::invalid(
            field,
            "must contain only lowercase letters, digits and `-`",
        ));
    }
    Ok(())
}

fn check_host(host: &str) -> Result<()> {
    check_text("host", host, MAX_NAME)?;
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
    {
        return Err(Error::invalid(
            "host",
            "must be a host name or an IP address",
        ));
    }
    Ok(())
}

fn check_list(field: &str, items: &[String], max: usize) -> Result<()> {
    if items.len() > max {
        return Err(Error::invalid(field, format!("at most {max} entries")));
    }
    for (i, item) in items.iter().enumerate() {
        check_text(&format!("{field}[{i}]"), item, MAX_SHORT_TEXT)?;
    }
    Ok(())
}

/// The health of an instance, after Consul's check states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Healthy: served by discovery.
    #[default]
    Passing,
    /// Degraded but serving (e.g. answering 429): still served by discovery.
    Warning,
    /// Down or silent: not served by discovery.
    Critical,
}

any_case_names!(HealthStatus);

impl HealthStatus {
    /// Every state, healthiest first.
    pub const ALL: [HealthStatus; 3] = [Self::Passing, Self::Warning, Self::Critical];

    /// Whether discovery hands out an instance in this state.
    pub fn is_serving(self) -> bool {
        !matches!(self, Self::Critical)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Passing => "passing",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

impl std::str::FromStr for HealthStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "passing" => Ok(Self::Passing),
            "warning" => Ok(Self::Warning),
            "critical" => Ok(Self::Critical),
            _ => Err(Error::invalid(
                "status",
                "must be one of passing, warning, critical",
            )),
        }
    }
}

/// A registered instance of a service, as the registry reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    /// Stable instance id.
    pub id: String,
    /// Service name.
    pub name: String,
    /// Service version.
    pub version: String,
    /// Host where the instance listens.
    pub host: String,
    /// Port where the instance listens.
    pub port: u16,
    /// Kind of service.
    #[serde(rename = "type")]
    pub service_type: String,
    /// Path of the health endpoint.
    pub health_endpoint: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Dependencies.
    pub dependencies: Vec<String>,
    /// Load-balancing weight.
    pub weight: u32,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Heartbeat time-to-live in seconds.
    pub ttl_seconds: u32,
    /// Effective status: `critical` once the heartbeat is older than the TTL, otherwise the
    /// verdict of the health checks.
    pub status: HealthStatus,
    /// The verdict of the health checks alone.
    pub check_status: HealthStatus,
    /// When this instance first registered.
    pub registered_at: DateTime<Utc>,
    /// The last heartbeat (or registration).
    pub last_heartbeat: DateTime<Utc>,
}

impl ServiceInstance {
    /// Build the instance a valid registration describes, registered at `now`.
    pub fn from_registration(
        reg: &Registration,
        default_ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Self {
        let ttl = reg
            .ttl_seconds
            .unwrap_or(default_ttl.as_secs() as i64)
            .clamp(1, MAX_TTL_SECONDS);
        Self {
            id: reg.instance_id(),
            name: reg.name.clone(),
            version: reg.version.clone(),
            host: reg.host.clone(),
            port: u16::try_from(reg.port).unwrap_or(0),
            service_type: reg.service_type.clone(),
            health_endpoint: reg.health_endpoint.clone(),
            tags: reg.tags.clone(),
            dependencies: reg.dependencies.clone(),
            weight: reg.weight.unwrap_or(1).clamp(1, 1000) as u32,
            metadata: reg.metadata.clone(),
            ttl_seconds: ttl as u32,
            status: HealthStatus::Passing,
            check_status: HealthStatus::Passing,
            registered_at: now,
            last_heartbeat: now,
        }
    }

    /// The base URL of the instance (`http://host:port`).
    pub fn url(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }

    /// When the heartbeat runs out.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.last_heartbeat + chrono::Duration::seconds(i64::from(self.ttl_seconds))
    }

    /// Whether the heartbeat is older than the TTL at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now > self.expires_at()
    }

    /// Recompute [`ServiceInstance::status`] from the heartbeat and the check verdict.
    pub fn refresh_status(&mut self, now: DateTime<Utc>) {
        self.status = if self.is_expired(now) {
            HealthStatus::Critical
        } else {
            self.check_status
        };
    }

    /// The key under which the registry finds this instance by address.
    pub fn address_key(&self) -> String {
        format!("{}|{}|{}", self.name, self.host, self.port)
    }
}

/// One page of a listing (see [`Registry::list_page`](super::Registry::list_page)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServicePage {
    /// The instances, ordered by name then id.
    pub instances: Vec<ServiceInstance>,
    /// Where the next page starts, when there may be one.
    pub next: Option<String>,
}

/// A listing position: the (name, id) of the last instance read, as an opaque cursor.
pub fn page_cursor(name: &str, id: &str) -> String {
    let mut cursor = String::with_capacity((name.len() + id.len() + 1) * 2);
    for byte in name.bytes().chain([0]).chain(id.bytes()) {
        cursor.push_str(&format!("{byte:02x}"));
    }
    cursor
}

/// The (name, id) a cursor from [`page_cursor`] holds; an error naming `cursor` when it
/// is not one.
pub fn parse_page_cursor(cursor: &str) -> crate::Result<(String, String)> {
    let bad = || crate::Error::invalid("cursor", "is not a cursor this registry gave");
    if cursor.len() % 2 != 0 || cursor.len() > 2_048 {
        return Err(bad());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let split = bytes.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let name = String::from_utf8(bytes[..split].to_vec()).map_err(|_| bad())?;
    let id = String::from_utf8(bytes[split + 1..].to_vec()).map_err(|_| bad())?;
    Ok((name, id))
}

/// The instances of one service and its change index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceInstances {
    /// The service's instances, ordered by id, whatever their status.
    pub instances: Vec<ServiceInstance>,
    /// The service's change index (see [`Registry::service`](super::Registry::service)):
    /// 0 for a service never seen.
    pub index: u64,
}

/// Filters for listing instances; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema, utoipa::IntoParams))]
#[serde(rename_all = "camelCase")]
pub struct ServiceFilter {
    /// Service name.
    pub name: Option<String>,
    /// A tag the instance carries.
    pub tag: Option<String>,
    /// Effective status.
    pub status: Option<HealthStatus>,
    /// Kind of service.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
}

impl ServiceFilter {
    /// A filter on the service name alone.
    pub fn by_name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            ..Self::default()
        }
    }

    /// Whether `instance` passes the filter.
    pub fn matches(&self, instance: &ServiceInstance) -> bool {
        self.name.as_ref().is_none_or(|n| *n == instance.name)
            && self.tag.as_ref().is_none_or(|t| instance.tags.contains(t))
            && self.status.is_none_or(|s| s == instance.status)
            && self
                .service_type
                .as_ref()
                .is_none_or(|t| *t == instance.service_type)
    }
}

/// What happened to an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// A new instance registered.
    Registered,
    /// A known instance registered again (its details may have changed).
    Updated,
    /// The instance deregistered.
    Deregistered,
    /// The effective status changed (a health verdict, or the heartbeat expiring or resuming).
    HealthChanged,
    /// The instance was removed by stale cleanup after its grace period.
    Expired,
}

/// One change in the registry, as the watch stream announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RegistryChange {
    /// What happened.
    pub kind: ChangeKind,
    /// The instance after the change (or as it was, when removed).
    pub instance: ServiceInstance,
    /// The effective status before the change, when there was one.
    pub previous_status: Option<HealthStatus>,
    /// When it happened.
    pub at: DateTime<Utc>,
}
