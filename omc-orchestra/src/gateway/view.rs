//! The gateway's local view of the registry: every instance by service, kept fresh by the
//! registry's watch stream plus a periodic full resync, so routing never calls the
//! registry per request.

use super::proxy::Target;
use crate::registry::{
    ChangeKind, Registry, RegistryChange, ServiceFilter, ServiceInstance, SmoothWeighted,
};
use crate::Result;
use parking_lot::RwLock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Instances by service, and the balancer that picks among them.
pub struct ServiceView {
    registry: Arc<dyn Registry>,
    /// The service names are the registry's: a client's request only looks them up, so a
    /// fast hasher is safe here.
    services: RwLock<foldhash::HashMap<String, Arc<Known>>>,
    balancer: SmoothWeighted,
    panic_threshold_percent: Option<u8>,
}

/// A service's instances and, beside each, where it is reached (built once per change).
#[derive(Debug, Default)]
struct Known {
    instances: Arc<Vec<ServiceInstance>>,
    targets: Vec<Arc<Target>>,
}

impl Known {
    fn new(instances: Vec<ServiceInstance>) -> Self {
        let targets = instances
            .iter()
            .map(|i| Arc::new(Target::instance(i)))
            .collect();
        Self {
            instances: Arc::new(instances),
            targets,
        }
    }
}

impl std::fmt::Debug for ServiceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceView")
            .field("services", &self.services.read().len())
            .finish_non_exhaustive()
    }
}

impl ServiceView {
    /// An empty view of `registry`; with a panic threshold of N %, every known instance
    /// serves when more than N % of a service's instances are unhealthy.
    pub fn new(registry: Arc<dyn Registry>, panic_threshold_percent: Option<u8>) -> Self {
        Self {
            registry,
            services: RwLock::new(foldhash::HashMap::default()),
            balancer: SmoothWeighted::new(),
            panic_threshold_percent,
        }
    }

    /// Replace the view with the registry's current list.
    pub async fn resync(&self) -> Result<()> {
        let all = self.registry.list(&ServiceFilter::default()).await?;
        let mut services: HashMap<String, Vec<ServiceInstance>> = HashMap::new();
        for instance in all {
            services
                .entry(instance.name.clone())
                .or_default()
                .push(instance);
        }
        let services = services
            .into_iter()
            .map(|(name, list)| (name, Arc::new(Known::new(list))))
            .collect();
        *self.services.write() = services;
        Ok(())
    }

    /// Apply one change from the watch stream.
    pub fn apply(&self, change: &RegistryChange) {
        let instance = &change.instance;
        let mut services = self.services.write();
        let current = services.get(&instance.name).cloned().unwrap_or_default();
        let mut kept: Vec<(ServiceInstance, Arc<Target>)> = current
            .instances
            .iter()
            .zip(&current.targets)
            .filter(|(i, _)| i.id != instance.id)
            .map(|(i, t)| (i.clone(), t.clone()))
            .collect();
        if !matches!(change.kind, ChangeKind::Deregistered | ChangeKind::Expired) {
            kept.push((instance.clone(), Arc::new(Target::instance(instance))));
            kept.sort_by(|(a, _), (b, _)| a.id.cmp(&b.id));
        }
        let (list, targets): (Vec<ServiceInstance>, Vec<Arc<Target>>) = kept.into_iter().unzip();
        if list.is_empty() {
            services.remove(&instance.name);
        } else {
            let known = Known {
                instances: Arc::new(list),
                targets,
            };
            services.insert(instance.name.clone(), Arc::new(known));
        }
    }

    /// Keep the view fresh until the task is aborted: follow the watch stream, resync
    /// every `every` and after falling behind.
    pub fn spawn(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let view = self.clone();
        tokio::spawn(async move {
            loop {
                let mut changes = view.registry.watch();
                if let Err(err) = view.resync().await {
                    tracing::warn!(error = %err, "gateway cannot list the registry");
                }
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        change = changes.recv() => match change {
                            Ok(change) => view.apply(&change),
                            Err(RecvError::Lagged(_)) => break,
                            Err(RecvError::Closed) => {
                                tokio::time::sleep(every).await;
                                break;
                            }
                        },
                        _ = tick.tick() => {
                            if let Err(err) = view.resync().await {
                                tracing::warn!(error = %err, "gateway cannot list the registry");
                            }
                        }
                    }
                }
            }
        })
    }

    /// Every known instance of `service`, any status.
    pub fn instances(&self, service: &str) -> Arc<Vec<ServiceInstance>> {
        self.services
            .read()
            .get(service)
            .map(|known| known.instances.clone())
            .unwrap_or_default()
    }

    /// Whether `service` has an instance.
    pub fn knows(&self, service: &str) -> bool {
        self.services
            .read()
            .get(service)
            .is_some_and(|known| !known.instances.is_empty())
    }

    /// The ids of every known instance.
    pub fn instance_ids(&self) -> HashSet<String> {
        self.services
            .read()
            .values()
            .flat_map(|known| known.instances.iter().map(|i| i.id.clone()))
            .collect()
    }

    /// Pick an instance of `service` among the serving ones that `admit` accepts (and
    /// that are not in `exclude`), by smooth weighted round-robin. Returns where the
    /// instance is reached and how many instances the service has.
    pub fn choose(
        &self,
        service: &str,
        exclude: &[Arc<str>],
        mut admit: impl FnMut(&ServiceInstance) -> bool,
    ) -> (Option<Arc<Target>>, usize) {
        let Some(known) = self.services.read().get(service).cloned() else {
            return (None, 0);
        };
        let all = &known.instances;
        let serving = all.iter().filter(|i| i.status.is_serving()).count();
        let unhealthy = all.len() - serving;
        let panic = self.panic_threshold_percent.is_some_and(|percent| {
            unhealthy > 0 && unhealthy * 100 > usize::from(percent) * all.len()
        });
        // The balancer keeps the score of an instance left out this time (unhealthy,
        // excluded, or kept away by its breaker) for when it is back.
        let picked = self.balancer.pick_among(service, all, |_, i| {
            (panic || i.status.is_serving()) && !exclude.iter().any(|e| **e == *i.id) && admit(i)
        });
        let target = picked.and_then(|index| known.targets.get(index).cloned());
        (target, all.len())
    }
}
