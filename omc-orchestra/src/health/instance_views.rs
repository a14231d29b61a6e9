//! The checker's view of every instance read on a timer and handed on (to gauges), so a
//! process embedding the library does not write its own refresh loop.

use super::{HealthChecker, InstanceHealthView};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Every `every`, read what `checker` knows about each probed instance (service name,
/// instance id, view; see [`HealthChecker::instances`]) and hand it to `after` (the server
/// refreshes its probe gauges there), until the task is aborted.
pub fn spawn_instance_views<F>(
    checker: Arc<HealthChecker>,
    every: Duration,
    mut after: F,
) -> JoinHandle<()>
where
    F: FnMut(&[(String, String, InstanceHealthView)]) + Send + 'static,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            after(&checker.instances());
        }
    })
}
