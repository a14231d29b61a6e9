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
    services: RwLock<HashMap<String, Arc<Vec<ServiceInstance>>>>,
    /// Where each known instance (by id) is reached, built once per change.
    targets: RwLock<HashMap<String, Arc<Target>>>,
    balancer: SmoothWeighted,
    panic_threshold_percent: Option<u8>,
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
            services: RwLock::new(HashMap::new()),
            targets: RwLock::new(HashMap::new()),
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
        let targets = services
            .values()
            .flatten()
            .map(|i| (i.id.clone(), Arc::new(Target::instance(i))))
            .collect();
        *self.services.write() = services
            .into_iter()
            .map(|(name, list)| (name, Arc::new(list)))
            .collect();
        *self.targets.write() = targets;
        Ok(())
    }

    /// Apply one change from the watch stream.
    pub fn apply(&self, change: &RegistryChange) {
        let instance = &change.instance;
        let mut services = self.services.write();
        let current = services.get(&instance.name).cloned().unwrap_or_default();
        let mut list: Vec<ServiceInstance> = current
            .iter()
            .filter(|i| i.id != instance.id)
            .cloned()
            .collect();
        let mut targets = self.targets.write();
        if matches!(change.kind, ChangeKind::Deregistered | ChangeKind::Expired) {
            targets.remove(&instance.id);
        } else {
            targets.insert(instance.id.clone(), Arc::new(Target::instance(instance)));
            list.push(instance.clone());
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        if list.is_empty() {
            services.remove(&instance.name);
        } else {
            services.insert(instance.name.clone(), Arc::new(list));
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
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `service` has an instance.
    pub fn knows(&self, service: &str) -> bool {
        self.services
            .read()
            .get(service)
            .is_some_and(|list| !list.is_empty())
    }

    /// The ids of every known instance.
    pub fn instance_ids(&self) -> HashSet<String> {
        self.services
            .read()
            .values()
            .flat_map(|list| list.iter().map(|i| i.id.clone()))
            .collect()
    }

    /// Pick an instance of `service` among the serving ones that `admit` accepts (and
    /// that are not in `exclude`), by smooth weighted round-robin. Returns where the
    /// instance is reached and how many instances the service has.
    pub fn choose(
        &self,
        service: &str,
        exclude: &[String],
        mut admit: impl FnMut(&ServiceInstance) -> bool,
    ) -> (Option<Arc<Target>>, usize) {
        let all = self.instances(service);
        let serving = all.iter().filter(|i| i.status.is_serving()).count();
        let unhealthy = all.len() - serving;
        let panic = self.panic_threshold_percent.is_some_and(|percent| {
            unhealthy > 0 && unhealthy * 100 > usize::from(percent) * all.len()
        });
        let candidates: Vec<&ServiceInstance> = all
            .iter()
            .filter(|i| panic || i.status.is_serving())
            .filter(|i| !exclude.contains(&i.id))
            .filter(|i| admit(i))
            .collect();
        let picked = self
            .balancer
            .pick(service, &candidates)
            .and_then(|index| candidates.get(index).copied());
        let target = picked.map(|instance| {
            self.targets
                .read()
                .get(&instance.id)
                .cloned()
                .unwrap_or_else(|| Arc::new(Target::instance(instance)))
        });
        (target, all.len())
    }
}
