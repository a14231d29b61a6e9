//! How far the event bus's consumer groups are behind, as Prometheus figures on the
//! registry server's `/metrics`, and as the `event_group_lag` series of the alert engine
//! (the built-in `EventConsumerLagging` rule watches it).

use omc_orchestra::events::{EventBus, EventStats};
use omc_orchestra::health::{spawn_event_lag, AlertEngine};
use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the figures are read from the bus: often enough for a dashboard, and one
/// cheap read of the store per replica.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// Lag and pending per group as gauges, and the events the backlog cap dropped unread as
/// a counter.
#[derive(Clone, Debug)]
pub(crate) struct EventGauges {
    lag: IntGaugeVec,
    pending: IntGaugeVec,
    trimmed_unread: IntCounter,
}

impl EventGauges {
    /// Register the figures into `registry`.
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let lag = IntGaugeVec::new(
            Opts::new(
                "event_group_lag",
                "Events not yet delivered to each consumer group.",
            ),
            &["group"],
        )?;
        let pending = IntGaugeVec::new(
            Opts::new(
                "event_group_pending",
                "Events delivered to each consumer group and not yet acknowledged.",
            ),
            &["group"],
        )?;
        let trimmed_unread = IntCounter::with_opts(Opts::new(
            "events_trimmed_unread_total",
            "Events the backlog cap dropped before some consumer group had read them.",
        ))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(pending.clone()))?;
        registry.register(Box::new(trimmed_unread.clone()))?;
        Ok(Self {
            lag,
            pending,
            trimmed_unread,
        })
    }

    /// Replace every group's series with those of `stats`; bring the counter up to the
    /// store's count (which every replica reads alike).
    pub(crate) fn update(&self, stats: &EventStats) {
        self.lag.reset();
        self.pending.reset();
        for group in &stats.groups {
            let labels = [group.group.as_str()];
            self.lag
                .with_label_values(&labels)
                .set(i64::try_from(group.lag).unwrap_or(i64::MAX));
            self.pending
                .with_label_values(&labels)
                .set(i64::try_from(group.pending).unwrap_or(i64::MAX));
        }
        let behind = stats
            .trimmed_unread
            .saturating_sub(self.trimmed_unread.get());
        self.trimmed_unread.inc_by(behind);
    }
}

/// Start the library's lag watch (see [`omc_orchestra::health::spawn_event_lag`]),
/// refreshing `gauges` (when registered) with each reading.
pub(crate) fn spawn(
    bus: Arc<dyn EventBus>,
    gauges: Option<EventGauges>,
    alerts: Arc<AlertEngine>,
) -> JoinHandle<()> {
    spawn_event_lag(bus, alerts, REFRESH_EVERY, move |stats| {
        if let Some(gauges) = &gauges {
            gauges.update(stats);
        }
    })
}
