//! The health checker: probes every registered instance and every named dependency on its
//! interval, applies rise/fall thresholds and tells the registry when a verdict changes.

use super::options::parse_duration;
use super::ServiceDependencies;
use super::{dependency_probe, AlertEngine, HealthProbe, HttpProbe, Labels, ProbeResult};
use super::{CheckerOptions, DependencyHealth, InstanceHealthView, TcpProbe, Tracker};
use crate::redact::redact;
use crate::registry::{HealthStatus, Registry, ServiceFilter, ServiceInstance};
use crate::{Error, SharedClock};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

struct Slot {
    tracker: Tracker,
    next_due: DateTime<Utc>,
    in_flight: bool,
    labels: Labels,
}

#[derive(Default)]
struct State {
    instances: HashMap<String, Slot>,
    dependencies: HashMap<String, Slot>,
}

enum Subject {
    Instance(Box<ServiceInstance>),
    Dependency { name: String, address: String },
}

struct Job {
    subject: Subject,
    // Only the Redis lock's TTL reads it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    interval: Duration,
    timeout: Duration,
}

/// Probes registered instances and their dependencies; see the module docs.
pub struct HealthChecker {
    registry: Arc<dyn Registry>,
    clock: SharedClock,
    options: CheckerOptions,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    alerts: Option<Arc<AlertEngine>>,
    #[cfg(feature = "redis")]
    lock: Option<(crate::RedisStore, String)>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// When a subject probed at `now` is due again. A service sets its own interval in its
/// metadata, so this saturates rather than overflow (`now + Duration::MAX` panics).
fn due_after(now: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(interval)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl HealthChecker {
    /// A checker over `registry` on `clock`.
    pub fn new(registry: Arc<dyn Registry>, clock: SharedClock, options: CheckerOptions) -> Self {
        Self {
            registry,
            clock,
            permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
            options,
            client: probe_client(),
            state: Mutex::new(State::default()),
            alerts: None,
            #[cfg(feature = "redis")]
            lock: None,
        }
    }

    /// Feed verdict changes to `alerts` (`instance_critical`, `dependency_critical`).
    pub fn with_alerts(mut self, alerts: Arc<AlertEngine>) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Share the work with other replicas on the same Redis: each instance is probed by
    /// the one replica that takes its short lock (`SET NX PX`) for the interval.
    #[cfg(feature = "redis")]
    pub fn with_redis_lock(mut self, store: crate::RedisStore, replica: impl Into<String>) -> Self {
        self.lock = Some((store, replica.into()));
        self
    }

    /// The options.
    pub fn options(&self) -> &CheckerOptions {
        &self.options
    }

    fn interval_of(&self, instance: &ServiceInstance) -> Duration {
        instance
            .metadata
            .get("healthInterval")
            .and_then(|v| parse_duration(v))
            .unwrap_or(self.options.interval)
    }

    fn timeout_of(&self, instance: &ServiceInstance) -> Duration {
        instance
            .metadata
            .get("healthTimeout")
            .and_then(|v| parse_duration(v))
            .unwrap_or(self.options.timeout)
    }

    /// The address a dependency name stands for: configured, or the name itself when it
    /// is a URL.
    fn dependency_address(&self, name: &str) -> Option<String> {
        if let Some(address) = self.options.dependencies.get(name) {
            return Some(address.clone());
        }
        name.contains("://").then(|| name.to_owned())
    }

    /// Probe every instance and dependency whose interval has come round, concurrently and
    /// at most `concurrency` at once, and wait for those probes; returns how many ran.
    pub async fn run_due(self: &Arc<Self>) -> crate::Result<usize> {
        let instances = self.registry.list(&ServiceFilter::default()).await?;
        let now = self.clock.now();
        let (jobs, gone) = self.take_due(instances, now);
        if let Some(alerts) = &self.alerts {
            // Whatever left the registry, is no longer named or recovered elsewhere no
            // longer alerts.
            for (metric, labels) in gone {
                alerts.observe(metric, labels, 0.0).await;
            }
        }
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let me = self.clone();
                tokio::spawn(async move { me.run_job(job).await })
            })
            .collect();
        let mut ran = 0;
        for handle in handles {
            if matches!(handle.await, Ok(true)) {
                ran += 1;
            }
        }
        Ok(ran)
    }

    /// The jobs due at `now`, and the series of critical subjects that went away or that
    /// the registry says recovered.
    fn take_due(
        &self,
        instances: Vec<ServiceInstance>,
        now: DateTime<Utc>,
    ) -> (Vec<Job>, Vec<(&'static str, Labels)>) {
        let keep = self.options.history;
        let mut gone = Vec::new();
        // A set, not a scan of the listing per slot: thousands of instances each tick.
        let listed: std::collections::HashSet<&str> =
            instances.iter().map(|i| i.id.as_str()).collect();
        let mut state = self.state.lock();
        state.instances.retain(|id, slot| {
            let kept = listed.contains(id.as_str());
            if !kept && slot.tracker.status() == HealthStatus::Critical {
                gone.push(("instance_critical", slot.labels.clone()));
            }
            kept
        });
        let mut jobs = Vec::new();
        let mut wanted: BTreeMap<String, String> = BTreeMap::new();
        let mut declared = ServiceDependencies::new();
        for instance in instances {
            for dep in &instance.dependencies {
                if let Some(address) = self.dependency_address(dep) {
                    wanted.insert(dep.clone(), address);
                }
            }
            declared
                .entry(instance.name.clone())
                .or_default()
                .extend(instance.dependencies.iter().cloned());
            if instance.metadata.get("healthCheck").map(String::as_str) == Some("none") {
                continue;
            }
            let slot = state
                .instances
                .entry(instance.id.clone())
                .or_insert_with(|| Slot {
                    tracker: Tracker::new(instance.check_status, now, keep),
                    next_due: now,
                    in_flight: false,
                    labels: Labels::from([
                        ("service".to_owned(), instance.name.clone()),
                        ("instance".to_owned(), instance.id.clone()),
                    ]),
                });
            if slot.in_flight || slot.next_due > now {
                continue;
            }
            // Another replica (or a re-registration) may have set the verdict; an alert
            // this replica raised resolves when another one sees the instance recover.
            let was = slot.tracker.status();
            slot.tracker.reset(instance.check_status, now);
            if was == HealthStatus::Critical && instance.check_status != was {
                gone.push(("instance_critical", slot.labels.clone()));
            }
            let interval = self.interval_of(&instance);
            slot.in_flight = true;
            slot.next_due = due_after(now, interval);
            jobs.push(Job {
                interval,
                timeout: self.timeout_of(&instance),
                subject: Subject::Instance(Box::new(instance)),
            });
        }
        if let Some(alerts) = &self.alerts {
            alerts.set_service_dependencies(declared);
        }
        state.dependencies.retain(|name, slot| {
            let kept = wanted.contains_key(name);
            if !kept && slot.tracker.status() == HealthStatus::Critical {
                gone.push(("dependency_critical", slot.labels.clone()));
            }
            kept
        });
        for (name, address) in wanted {
            let slot = state
                .dependencies
                .entry(name.clone())
                .or_insert_with(|| Slot {
                    tracker: Tracker::new(HealthStatus::Passing, now, keep),
                    next_due: now,
                    in_flight: false,
                    // A dependency named by its URL would put its password in alerts.
                    labels: Labels::from([("dependency".to_owned(), redact(&name))]),
                });
            if slot.in_flight || slot.next_due > now {
                continue;
            }
            slot.in_flight = true;
            slot.next_due = due_after(now, self.options.interval);
            jobs.push(Job {
                interval: self.options.interval,
                timeout: self.options.timeout,
                subject: Subject::Dependency { name, address },
            });
        }
        (jobs, gone)
    }

    fn probe_for(&self, job: &Job) -> Option<Box<dyn HealthProbe>> {
        match &job.subject {
            Subject::Instance(instance) => {
                let mode = instance.metadata.get("healthCheck").map(String::as_str);
                if mode == Some("tcp") || instance.health_endpoint.is_empty() {
                    let address = instance.url().trim_start_matches("http://").to_owned();
                    return Some(Box::new(TcpProbe::new(address, job.timeout)));
                }
                let path = &instance.health_endpoint;
                let sep = if path.starts_with('/') { "" } else { "/" };
                let url = format!("{}{sep}{path}", instance.url());
                Some(Box::new(HttpProbe::with_client(
                    self.client.clone(),
                    url,
                    job.timeout,
                )))
            }
            Subject::Dependency { address, .. } => {
                dependency_probe(address, job.timeout, &self.client)
            }
        }
    }

    /// Whether this replica owns the subject for this interval.
    async fn owns(&self, job: &Job) -> bool {
        #[cfg(feature = "redis")]
        if let Some((store, replica)) = &self.lock {
            let subject = match &job.subject {
                Subject::Instance(i) => format!("instance:{}", i.id),
                Subject::Dependency { name, .. } => format!("dependency:{name}"),
            };
            let key = store.key("health", &subject, "lock");
            // Slightly shorter than the interval so the next round's lock is free.
            let ttl = u64::try_from(job.interval.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_sub(50)
                .max(100);
            let taken = store
                .retry(|mut conn| {
                    let key = key.clone();
                    let replica = replica.clone();
                    async move {
                        redis::cmd("SET")
                            .arg(&key)
                            .arg(&replica)
                            .arg("NX")
                            .arg("PX")
                            .arg(ttl)
                            .query_async::<Option<String>>(&mut conn)
                            .await
                    }
                })
                .await;
            return match taken {
                Ok(answer) => answer.is_some(),
                Err(err) => {
                    tracing::warn!(error = %err, "health lock unavailable; probing anyway");
                    true
                }
            };
        }
        let _ = job;
        true
    }

    async fn run_job(self: Arc<Self>, job: Job) -> bool {
        let probe = self.probe_for(&job);
        let result = match probe {
            None => Some(ProbeResult::new(
                HealthStatus::Warning,
                "cannot probe this address (unknown scheme, or built without its feature)",
                std::time::Instant::now(),
            )),
            Some(probe) if self.owns(&job).await => {
                let _permit = self.permits.clone().acquire_owned().await;
                // The probe's own timeout bounds it; this is a backstop.
                let limit = job.timeout.saturating_add(Duration::from_secs(1));
                tokio::time::timeout(limit, probe.check()).await.ok()
            }
            Some(_) => None,
        };
        let ran = result.is_some();
        let (change, labels) = {
            let mut state = self.state.lock();
            let slot = match &job.subject {
                Subject::Instance(i) => state.instances.get_mut(&i.id),
                Subject::Dependency { name, .. } => state.dependencies.get_mut(name),
            };
            let Some(slot) = slot else { return ran };
            let change = result.and_then(|mut result| {
                result.checked_at = self.clock.now();
                slot.tracker.record(result, self.options.thresholds)
            });
            (change, slot.labels.clone())
        };
        if let Some(status) = change {
            self.apply(&job.subject, status, labels).await;
        }
        // Cleared only now, so the next round sees the registry after this verdict.
        let mut state = self.state.lock();
        let slot = match &job.subject {
            Subject::Instance(i) => state.instances.get_mut(&i.id),
            Subject::Dependency { name, .. } => state.dependencies.get_mut(name),
        };
        if let Some(slot) = slot {
            slot.in_flight = false;
        }
        ran
    }

    async fn apply(&self, subject: &Subject, status: HealthStatus, labels: Labels) {
        let metric = match subject {
            Subject::Instance(instance) => {
                match self.registry.set_health(&instance.id, status).await {
                    Ok(_) | Err(Error::NotFound { .. }) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, id = %instance.id, "cannot record health")
                    }
                }
                "instance_critical"
            }
            Subject::Dependency { name, .. } => {
                tracing::info!(dependency = %redact(name), status = status.as_str(), "dependency health changed");
                "dependency_critical"
            }
        };
        if let Some(alerts) = &self.alerts {
            let value = if status == HealthStatus::Critical {
                1.0
            } else {
                0.0
            };
            alerts.observe(metric, labels, value).await;
        }
    }

    /// What the checker knows about instance `id` (`None` before its first round).
    pub fn instance(&self, id: &str) -> Option<InstanceHealthView> {
        let state = self.state.lock();
        state
            .instances
            .get(id)
            .map(|slot| InstanceHealthView::from_tracker(&slot.tracker))
    }

    /// Every probed instance: service name, instance id and what the checker knows.
    pub fn instances(&self) -> Vec<(String, String, InstanceHealthView)> {
        let state = self.state.lock();
        state
            .instances
            .iter()
            .map(|(id, slot)| {
                let service = slot.labels.get("service").cloned().unwrap_or_default();
                let view = InstanceHealthView::from_tracker(&slot.tracker);
                (service, id.clone(), view)
            })
            .collect()
    }

    /// Every probed dependency, by name; names and addresses have their passwords masked.
    pub fn dependencies(&self) -> Vec<DependencyHealth> {
        self.dependency_views(|_| true)
    }

    /// The probed dependencies among `names` (as an instance registered them), by name;
    /// names and addresses have their passwords masked.
    pub fn dependencies_named(&self, names: &[String]) -> Vec<DependencyHealth> {
        self.dependency_views(|name| names.iter().any(|n| n == name))
    }

    fn dependency_views(&self, wanted: impl Fn(&str) -> bool) -> Vec<DependencyHealth> {
        let state = self.state.lock();
        let mut all: Vec<_> = state
            .dependencies
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|(name, slot)| DependencyHealth {
                name: redact(name),
                address: self
                    .dependency_address(name)
                    .map(|a| redact(&a))
                    .unwrap_or_default(),
                health: InstanceHealthView::from_tracker(&slot.tracker),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Run [`HealthChecker::run_due`] every `tick` until the task is aborted; a slow round
    /// never delays the next one (each instance is probed once at a time).
    pub fn spawn(self: Arc<Self>, tick: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let me = self.clone();
                tokio::spawn(async move {
                    if let Err(err) = me.run_due().await {
                        tracing::warn!(error = %err, "health round failed");
                    }
                });
            }
        })
    }
}

/// The HTTP client of health checks. Like Consul's HTTP checks it keeps no idle
/// connections: each probe opens its own, so a connection a service half-closed cannot
/// stall the next probe, and a probe measures what a new client would see.
fn probe_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
}
