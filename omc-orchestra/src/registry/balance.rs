//! Discovery: smooth weighted round-robin and the panic threshold.

use super::{Registry, ServiceFilter, ServiceInstance};
use crate::Result;
use parking_lot::Mutex;
use serde::Serialize;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;

/// Smooth weighted round-robin, as nginx does it: each pick adds every instance's weight
/// to its running score, takes the highest, and subtracts the total from the winner. Over
/// any window the spread follows the weights, with no bursts to one instance.
#[derive(Debug, Default)]
pub struct SmoothWeighted {
    scores: Mutex<HashMap<String, HashMap<String, i64>>>,
}

impl SmoothWeighted {
    /// A balancer with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pick one of `instances` of `service`; returns its index. Instances that left are
    /// forgotten; new ones start at zero.
    pub fn pick<I: Borrow<ServiceInstance>>(
        &self,
        service: &str,
        instances: &[I],
    ) -> Option<usize> {
        if instances.is_empty() {
            return None;
        }
        let mut all = self.scores.lock();
        if !all.contains_key(service) {
            all.insert(service.to_owned(), HashMap::new());
        }
        let scores = all.get_mut(service)?;
        if scores.len() != instances.len()
            || instances
                .iter()
                .any(|i| !scores.contains_key(&i.borrow().id))
        {
            scores.retain(|id, _| instances.iter().any(|i| i.borrow().id == *id));
            for instance in instances {
                scores.entry(instance.borrow().id.clone()).or_insert(0);
            }
        }
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (index, instance) in instances.iter().enumerate() {
            let instance = instance.borrow();
            let weight = i64::from(instance.weight.max(1));
            total += weight;
            let Some(score) = scores.get_mut(&instance.id) else {
                continue;
            };
            *score += weight;
            if best.is_none_or(|(_, top)| *score > top) {
                best = Some((index, *score));
            }
        }
        let (index, _) = best?;
        if let Some(score) = scores.get_mut(&instances[index].borrow().id) {
            *score -= total;
        }
        Some(index)
    }
}

/// The answer of [`Discovery::discover`].
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Discovered {
    /// The service asked for.
    pub service: String,
    /// The instances discovery serves (healthy ones, or all known ones in panic mode).
    pub instances: Vec<ServiceInstance>,
    /// The instance picked by the balancer for this call.
    pub selected: Option<ServiceInstance>,
    /// How many instances of the service are registered, healthy or not.
    pub total: usize,
    /// How many of them are healthy.
    pub healthy: usize,
    /// True when too many instances are down and discovery serves them all anyway.
    pub panic_mode: bool,
}

/// Discovery over a [`Registry`]: healthy instances plus one picked by smooth weighted
/// round-robin.
///
/// With a panic threshold of N %, when more than N % of a service's instances are
/// unhealthy at once (the mark of a network partition or a registry problem more often
/// than of a real mass failure), discovery keeps serving every known instance and says so
/// with `panicMode`, like Eureka's self-preservation and Envoy's panic routing.
pub struct Discovery {
    registry: Arc<dyn Registry>,
    balancer: SmoothWeighted,
    panic_threshold_percent: Option<u8>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("panic_threshold_percent", &self.panic_threshold_percent)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery over `registry`, with no panic threshold.
    pub fn new(registry: Arc<dyn Registry>) -> Self {
        Self {
            registry,
            balancer: SmoothWeighted::new(),
            panic_threshold_percent: None,
        }
    }

    /// Serve every instance when more than `percent` % of a service's instances are
    /// unhealthy (`None` turns it off).
    pub fn with_panic_threshold(mut self, percent: Option<u8>) -> Self {
        self.panic_threshold_percent = percent.map(|p| p.min(100));
        self
    }

    /// The registry underneath.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Healthy instances of `service` and the one picked for this call.
    pub async fn discover(&self, service: &str) -> Result<Discovered> {
        let all = self.registry.list(&ServiceFilter::by_name(service)).await?;
        Ok(self.choose(service, all))
    }

    /// Apply health, the panic threshold and the balancer to a known set of instances.
    pub fn choose(&self, service: &str, all: Vec<ServiceInstance>) -> Discovered {
        let total = all.len();
        let healthy: Vec<ServiceInstance> = all
            .iter()
            .filter(|i| i.status.is_serving())
            .cloned()
            .collect();
        let healthy_count = healthy.len();
        let unhealthy = total - healthy_count;
        let panic_mode = match self.panic_threshold_percent {
            Some(percent) if total > 0 && unhealthy > 0 => {
                unhealthy * 100 > usize::from(percent) * total
            }
            _ => false,
        };
        let instances = if panic_mode { all } else { healthy };
        let selected = self
            .balancer
            .pick(service, &instances)
            .map(|index| instances[index].clone());
        Discovered {
            service: service.to_owned(),
            instances,
            selected,
            total,
            healthy: healthy_count,
            panic_mode,
        }
    }
}
