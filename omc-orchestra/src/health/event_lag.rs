//! Consumer-group lag as an alert series: the event bus's stats read on a timer, each
//! group's lag observed on the alert engine, and the stats handed on (to gauges).

use super::{AlertEngine, Labels};
use crate::events::{EventBus, EventStats};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The series each consumer group's lag is observed as (label `group`); the built-in rule
/// `EventConsumerLagging` watches it.
pub const EVENT_LAG_METRIC: &str = "event_group_lag";

/// Every `every`, read `bus`'s stats, observe each consumer group's lag on `alerts` (a
/// group no longer listed is observed at 0, so an alert on it resolves) and hand the
/// stats to `after` (the server refreshes its gauges there), until the task is aborted.
pub fn spawn_event_lag<F>(
    bus: Arc<dyn EventBus>,
    alerts: Arc<AlertEngine>,
    every: Duration,
    mut after: F,
) -> JoinHandle<()>
where
    F: FnMut(&EventStats) + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = BTreeSet::new();
        loop {
            tick.tick().await;
            let stats = match bus.stats().await {
                Ok(stats) => stats,
                Err(err) => {
                    tracing::debug!(error = %err, "event stats not read");
                    continue;
                }
            };
            after(&stats);
            let now: BTreeSet<String> = stats.groups.iter().map(|g| g.group.clone()).collect();
            let gone = seen.difference(&now).map(|name| (name, 0_u64));
            let lags = stats.groups.iter().map(|g| (&g.group, g.lag));
            for (name, lag) in lags.chain(gone) {
                let labels = Labels::from([("group".to_owned(), name.clone())]);
                alerts.observe(EVENT_LAG_METRIC, labels, lag as f64).await;
            }
            seen = now;
        }
    })
}
