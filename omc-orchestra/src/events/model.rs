//! The event model: the envelope, what a producer sends, queries and filters.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The event types the ERP's services already use; any other `SCREAMING_SNAKE` type works.
pub mod types {
    /// An instance registered.
    pub const SERVICE_REGISTERED: &str = "SERVICE_REGISTERED";
    /// An instance deregistered or was removed by stale cleanup.
    pub const SERVICE_DEREGISTERED: &str = "SERVICE_DEREGISTERED";
    /// An instance's health changed.
    pub const SERVICE_HEALTH_CHANGED: &str = "SERVICE_HEALTH_CHANGED";
    /// A station price changed.
    pub const PRICE_UPDATED: &str = "PRICE_UPDATED";
    /// Stock levels changed.
    pub const INVENTORY_UPDATED: &str = "INVENTORY_UPDATED";
    /// A UPPF claim was submitted.
    pub const UPPF_CLAIM_SUBMITTED: &str = "UPPF_CLAIM_SUBMITTED";
    /// An alert fired or resolved.
    pub const SYSTEM_ALERT: &str = "SYSTEM_ALERT";
    /// A performance sample.
    pub const PERFORMANCE_METRIC: &str = "PERFORMANCE_METRIC";
    /// A user did something worth recording.
    pub const USER_ACTION: &str = "USER_ACTION";
}

/// How urgent an event is; consumers that are behind get critical events first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventPriority {
    /// Delivered first.
    Critical,
    /// Before normal.
    High,
    /// The default.
    #[default]
    Normal,
    /// Delivered last.
    Low,
}

any_case_names!(EventPriority);

/// An event to publish: what a producer supplies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct NewEvent {
    /// Event type (`PRICE_UPDATED`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The producing service.
    pub source: String,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
    /// Priority (default `normal`).
    #[serde(default)]
    pub priority: EventPriority,
    /// Tags for filtering.
    #[serde(default)]
    pub tags: Vec<String>,
    /// When set, only this service's consumers receive the event.
    #[serde(default)]
    pub target: Option<String>,
    /// Correlates events of one business process.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Publishing again with the same key within [`IDEMPOTENCY_WINDOW`] publishes nothing
    /// and answers the first event: safe retries, and one announcement however many
    /// replicas see the same change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The W3C `traceparent` of the work that published it; the publishing request's trace
    /// when not given, so deliveries continue that trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

impl NewEvent {
    /// This event carrying the running task's trace (see [`crate::telemetry::current`])
    /// when it names none itself.
    pub fn in_current_trace(mut self) -> Self {
        if self.traceparent.is_none() {
            self.traceparent = crate::telemetry::current_header();
        }
        self
    }

    /// A normal-priority event of `event_type` from `source` with `data`.
    pub fn new(
        event_type: impl Into<String>,
        source: impl Into<String>,
        data: serde_json::Value,
    ) -> Self {
        Self {
            event_type: event_type.into(),
            source: source.into(),
            data,
            priority: EventPriority::Normal,
            tags: Vec::new(),
            target: None,
            correlation_id: None,
            traceparent: None,
            idempotency_key: None,
        }
    }

    /// Check every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        let t = &self.event_type;
        if t.is_empty()
            || t.len() > 128
            || !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err(Error::invalid(
                "type",
                "must be 1-128 letters, digits, `_`, `.` or `-`",
            ));
        }
        if self.source.trim().is_empty() || self.source.len() > 253 || self.source.contains('\n') {
            return Err(Error::invalid("source", "must be 1-253 bytes"));
        }
        if self.tags.len() > 32
            || self
                .tags
                .iter()
                .any(|t| t.is_empty() || t.len() > 128 || t.contains('\n'))
        {
            return Err(Error::invalid(
                "tags",
                "at most 32 tags of 1-128 bytes without line breaks",
            ));
        }
        if let Some(target) = &self.target {
            if target.is_empty()
                || target.len() > 253
                || !target
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
            {
                return Err(Error::invalid(
                    "target",
                    "must be a service name: 1-253 letters, digits, `_`, `.`, `:` or `-`",
                ));
            }
        }
        if self.correlation_id.as_ref().is_some_and(|c| c.len() > 253) {
            return Err(Error::invalid("correlationId", "at most 253 bytes"));
        }
        crate::telemetry::TraceParent::check(self.traceparent.as_deref())?;
        if self
            .idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 253)
        {
            return Err(Error::invalid("idempotencyKey", "must be 1-253 bytes"));
        }
        Ok(())
    }
}

/// A published event: the envelope after CloudEvents (`id`, `type`, `source`, `time`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique, ordered id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The producing service.
    pub source: String,
    /// When it was published.
    pub time: DateTime<Utc>,
    /// The payload.
    pub data: serde_json::Value,
    /// Priority.
    pub priority: EventPriority,
    /// Tags.
    pub tags: Vec<String>,
    /// The one service meant to receive it, if any.
    pub target: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// The trace it belongs to (W3C `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// A history query; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventQuery {
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Source.
    pub source: Option<String>,
    /// A tag the event carries.
    pub tag: Option<String>,
    /// Published at or after.
    pub since: Option<DateTime<Utc>>,
    /// Published before.
    pub until: Option<DateTime<Utc>>,
    /// Most events returned (newest kept); default 100.
    pub limit: Option<usize>,
}

impl EventQuery {
    /// Most events one query returns.
    pub const MAX_LIMIT: usize = 10_000;

    /// The effective limit: `limit`, default 100, at most [`EventQuery::MAX_LIMIT`].
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(100).min(Self::MAX_LIMIT)
    }

    /// Whether `event` passes the query's filters.
    pub fn matches(&self, event: &Event) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| *t == event.event_type)
            && self.source.as_ref().is_none_or(|s| *s == event.source)
            && self.tag.as_ref().is_none_or(|t| event.tags.contains(t))
            && self.since.is_none_or(|s| event.time >= s)
            && self.until.is_none_or(|u| event.time < u)
    }
}

impl EventPriority {
    /// Every priority, most urgent first: the order a consumer that is behind reads them.
    pub const ALL: [EventPriority; 4] = [Self::Critical, Self::High, Self::Normal, Self::Low];

    /// The priority's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// Position in [`EventPriority::ALL`] (0 = critical).
    pub fn rank(self) -> usize {
        self as usize
    }
}

/// Which events a subscription or consumer wants; an empty list accepts anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Accepted event types.
    #[serde(default)]
    pub types: Vec<String>,
    /// The event must carry at least one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Accepted sources.
    #[serde(default)]
    pub sources: Vec<String>,
}

impl EventFilter {
    /// A filter accepting only `types`.
    pub fn types<I: IntoIterator<Item = S>, S: Into<String>>(types: I) -> Self {
        Self {
            types: types.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && (self.sources.is_empty() || self.sources.contains(&event.source))
            && (self.tags.is_empty() || self.tags.iter().any(|t| event.tags.contains(t)))
    }

    /// Check the filter's size and contents; errors name the field.
    pub fn validate(&self) -> Result<()> {
        for (field, list) in [
            ("types", &self.types),
            ("tags", &self.tags),
            ("sources", &self.sources),
        ] {
            if list.len() > 64 || list.iter().any(|s| s.is_empty() || s.len() > 253) {
                return Err(Error::invalid(
                    field,
                    "at most 64 entries of 1-253 bytes each",
                ));
            }
            if list.iter().any(|s| s.contains('\n')) {
                return Err(Error::invalid(field, "must not contain line breaks"));
            }
        }
        Ok(())
    }
}

/// Where a replay starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    /// After the event with this id (exclusive).
    After(EventId),
    /// At or after this time (inclusive).
    Since(DateTime<Utc>),
}

/// An event id: `{milliseconds}-{sequence}`, ordered like a Redis Stream id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// Milliseconds part.
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl std::str::FromStr for EventId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::invalid("id", "must look like `1700000000000-0`");
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An event parked after it could not be delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The event's id.
    pub event_id: String,
    /// The event, when it was still stored.
    pub event: Option<Event>,
    /// The consumer group that gave up on it.
    pub group: String,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// Why it was parked.
    pub reason: String,
    /// When it was parked.
    pub at: DateTime<Utc>,
}

/// Counts for one event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct TypeStats {
    /// Events published.
    pub published: u64,
    /// First deliveries to consumer groups.
    pub delivered: u64,
    /// Deliveries after a visibility timeout ran out.
    pub redelivered: u64,
    /// Events parked in the dead-letter list.
    pub dead: u64,
}

/// Bus counters, per event type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventStats {
    /// Sums over every type.
    pub total: TypeStats,
    /// Counts by event type (types past [`MAX_STAT_TYPES`] are counted under `_other`).
    pub by_type: BTreeMap<String, TypeStats>,
    /// Lag and pending counts of each consumer group, by group name.
    #[serde(default)]
    pub groups: Vec<GroupLag>,
    /// Events the backlog cap dropped before some consumer group had read them, since the
    /// store was made (see [`BusOptions::backlog_cap`](super::BusOptions::backlog_cap)).
    #[serde(default)]
    pub trimmed_unread: u64,
}

/// How far one consumer group is behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupLag {
    /// The group's name (the service it serves).
    pub group: String,
    /// Events not yet delivered to the group, summed over the priorities. On Redis this
    /// counts the entries the group has yet to pass over, events targeted at other groups
    /// included (it skips them when it reaches them).
    pub lag: u64,
    /// Events delivered to the group and not yet acknowledged, summed over the priorities.
    pub pending: u64,
    /// The same two counts per priority.
    pub by_priority: BTreeMap<EventPriority, LagCounts>,
}

/// Lag and pending counts of a group on one priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LagCounts {
    /// Events not yet delivered to the group.
    pub lag: u64,
    /// Events delivered and not yet acknowledged.
    pub pending: u64,
}

impl GroupLag {
    /// Add the counts of `group` on `priority`, to its entry in `groups` (made when
    /// missing, keeping `groups` sorted by name).
    pub fn add(
        groups: &mut Vec<GroupLag>,
        group: &str,
        priority: EventPriority,
        counts: LagCounts,
    ) {
        let at = match groups.binary_search_by(|g| g.group.as_str().cmp(group)) {
            Ok(at) => at,
            Err(at) => {
                groups.insert(
                    at,
                    GroupLag {
                        group: group.to_owned(),
                        ..GroupLag::default()
                    },
                );
                at
            }
        };
        let entry = &mut groups[at];
        entry.lag += counts.lag;
        entry.pending += counts.pending;
        let own = entry.by_priority.entry(priority).or_default();
        own.lag += counts.lag;
        own.pending += counts.pending;
    }
}

/// How many distinct event types the stats keep before counting the rest as `_other`.
pub const MAX_STAT_TYPES: usize = 1000;

impl EventStats {
    /// Add `n` to counter `kind` (`published`, `delivered`, `redelivered`, `dead`) of `event_type`.
    pub fn add(&mut self, kind: &str, event_type: &str, n: u64) {
        let key = if self.by_type.len() >= MAX_STAT_TYPES && !self.by_type.contains_key(event_type)
        {
            "_other"
        } else {
            event_type
        };
        for counts in [
            &mut self.total,
            self.by_type.entry(key.to_owned()).or_default(),
        ] {
            match kind {
                "published" => counts.published += n,
                "delivered" => counts.delivered += n,
                "redelivered" => counts.redelivered += n,
                "dead" => counts.dead += n,
                _ => {}
            }
        }
    }
}
