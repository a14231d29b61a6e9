//! [`Registered`]: a live registration that keeps itself alive with heartbeats.

use crate::{ClientError, OrchestraClient, Result};
use omc_orchestra::registry::{Registration, ServiceInstance};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

/// Options for [`OrchestraClient::register_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterOptions {
    /// How often to send a heartbeat; `None` means a third of the instance's TTL (every
    /// 10 s with the default TTL of 30 s), so two heartbeats may be lost before the
    /// registry marks the instance critical.
    pub heartbeat_every: Option<Duration>,
}

/// A registered instance whose background task sends `PUT /registry/heartbeat/{id}` on a
/// fixed interval.
///
/// - When a heartbeat answers 404 (the registry forgot the instance, e.g. it restarted with
///   in-memory state) the task registers again and carries on with the new instance.
/// - Network errors and other failures are logged with `tracing::warn!` and retried on the
///   next tick.
/// - [`Registered::deregister`] (or [`crate::Orchestra::shutdown`]) stops the task and
///   removes the instance.
/// - Dropping the handle without either warns (`tracing::warn!`), stops the heartbeats
///   and, when a Tokio runtime is still running, spawns a best-effort deregistration: at
///   the end of `main` the runtime stops before it runs, and the instance stays listed
///   until its TTL runs out.
pub struct Registered {
    live: Arc<Live>,
}

/// What a [`Registered`] handle and the [`crate::Orchestra`] that made it share, so either
/// can deregister the instance, once.
pub(crate) struct Live {
    client: OrchestraClient,
    current: Arc<Mutex<ServiceInstance>>,
    heartbeat_every: Duration,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("id", &self.id())
            .field("heartbeat_every", &self.live.heartbeat_every)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// Start heartbeats for `instance`, which `registration` produced.
    pub(crate) fn start(
        client: OrchestraClient,
        registration: Registration,
        instance: ServiceInstance,
        options: RegisterOptions,
    ) -> Self {
        let heartbeat_every = options
            .heartbeat_every
            .unwrap_or_else(|| Duration::from_secs(u64::from(instance.ttl_seconds.max(1))) / 3)
            .max(Duration::from_millis(1));
        let current = Arc::new(Mutex::new(instance));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(keep_alive(
            client.clone(),
            registration,
            Arc::clone(&current),
            heartbeat_every,
            stopped,
        ));
        let live = Live {
            client,
            current,
            heartbeat_every,
            stop: Mutex::new(Some(stop)),
            task: Mutex::new(Some(task)),
        };
        Self {
            live: Arc::new(live),
        }
    }

    /// The shared part, for an [`crate::Orchestra`] to deregister at shutdown.
    pub(crate) fn live(&self) -> Weak<Live> {
        Arc::downgrade(&self.live)
    }

    /// The instance as the registry last reported it (after the latest heartbeat or
    /// re-registration).
    pub fn instance(&self) -> ServiceInstance {
        lock(&self.live.current).clone()
    }

    /// The instance id.
    pub fn id(&self) -> String {
        lock(&self.live.current).id.clone()
    }

    /// How often the background task sends a heartbeat.
    pub fn heartbeat_every(&self) -> Duration {
        self.live.heartbeat_every
    }

    /// Stop the heartbeats, wait for one in flight to finish, and remove the instance from
    /// the registry (`DELETE /registry/services/{id}`). An instance the registry already
    /// forgot, or that [`crate::Orchestra::shutdown`] removed, counts as removed.
    pub async fn deregister(self) -> Result<()> {
        self.live.deregister().await
    }
}

impl Live {
    /// Stop the heartbeats and remove the instance; nothing the second time.
    pub(crate) async fn deregister(&self) -> Result<()> {
        let Some(stop) = lock(&self.stop).take() else {
            return Ok(());
        };
        let _ = stop.send(());
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let id = lock(&self.current).id.clone();
        match self.client.deregister(&id).await {
            Ok(()) | Err(ClientError::Http { status: 404, .. }) => Ok(()),
            Err(err) => Err(err),
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // Deregistered already: nothing left to do.
        if lock(&self.live.stop).is_none() {
            return;
        }
        let id = self.id();
        tracing::warn!(
            instance = %id,
            "a registration was dropped without deregister(); call it (or \
             Orchestra::shutdown) before the end of main, or the registry lists the \
             instance until its TTL runs out"
        );
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            if let Some(stop) = lock(&self.live.stop).take() {
                let _ = stop.send(());
            }
            return;
        };
        let live = Arc::clone(&self.live);
        runtime.spawn(async move {
            if let Err(err) = live.deregister().await {
                tracing::warn!(instance = %id, error = %err, "deregistration on drop failed");
            }
        });
    }
}

/// The heartbeat loop: one heartbeat per tick until `stopped` fires (or its sender drops).
/// A tick's work always finishes, so a re-registration never lands after a deregistration.
async fn keep_alive(
    client: OrchestraClient,
    registration: Registration,
    current: Arc<Mutex<ServiceInstance>>,
    every: Duration,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut ticks = interval_at(Instant::now() + every, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        let id = lock(&current).id.clone();
        match client.heartbeat(&id).await {
            Ok(instance) => *lock(&current) = instance,
            Err(ClientError::Http { status: 404, .. }) => {
                match client.register_once(&registration).await {
                    Ok(instance) => {
                        tracing::info!(
                            old = %id,
                            new = %instance.id,
                            "registry forgot the instance; registered again"
                        );
                        *lock(&current) = instance;
                    }
                    Err(err) => {
                        tracing::warn!(instance = %id, error = %err, "re-registration failed; retrying next tick");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(instance = %id, error = %err, "heartbeat failed; retrying next tick");
            }
        }
    }
}

fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
