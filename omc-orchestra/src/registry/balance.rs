//! Discovery: smooth weighted round-robin and the panic threshold.

use super::{Registry, ServiceInstance};
use crate::Result;
use parking_lot::Mutex;
use serde::Serialize;
use std::borrow::Borrow;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// Smooth weighted round-robin, as nginx does it: each pick adds every instance's weight
/// to its running score, takes the highest, and subtracts the total from the winner. Over
/// any window the spread follows the weights, with no bursts to one instance.
#[derive(Debug, Default)]
pub struct SmoothWeighted {
    /// Per service, each instance's score in the order of the last list picked from. The
    /// service names are the registry's, so a fast hasher is safe here.
    scores: Mutex<foldhash::HashMap<String, Vec<Score>>>,
}

/// One instance's running score.
#[derive(Debug)]
struct Score {
    id: String,
    score: i64,
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
        self.pick_among(service, instances, |_, _| true)
    }

    /// Pick one of the `instances` of `service` that `eligible` accepts; returns its
    /// index in `instances`. Like nginx skipping a peer that is down, an instance that is
    /// not eligible keeps its score for later picks, and its weight does not count this
    /// time. `eligible` is asked once about each instance, in order. Instances that left
    /// the list are forgotten; new ones start at zero.
    pub fn pick_among<I: Borrow<ServiceInstance>>(
        &self,
        service: &str,
        instances: &[I],
        mut eligible: impl FnMut(usize, &ServiceInstance) -> bool,
    ) -> Option<usize> {
        if instances.is_empty() {
            return None;
        }
        let mut all = self.scores.lock();
        if let Some(scores) = all.get_mut(service) {
            return advance(scores, instances, &mut eligible);
        }
        let mut scores = Vec::new();
        let picked = advance(&mut scores, instances, &mut eligible);
        all.insert(service.to_owned(), scores);
        picked
    }
}

/// One round of smooth weighted round-robin over `scores`, first brought in line with
/// `instances`.
fn advance<I: Borrow<ServiceInstance>>(
    scores: &mut Vec<Score>,
    instances: &[I],
    eligible: &mut impl FnMut(usize, &ServiceInstance) -> bool,
) -> Option<usize> {
    let aligned = scores.len() == instances.len()
        && scores
            .iter()
            .zip(instances)
            .all(|(score, instance)| score.id == instance.borrow().id);
    if !aligned {
        realign(scores, instances);
    }
    let mut total = 0i64;
    let mut best: Option<(usize, i64)> = None;
    for (index, (score, instance)) in scores.iter_mut().zip(instances).enumerate() {
        let instance = instance.borrow();
        if !eligible(index, instance) {
            continue;
        }
        let weight = i64::from(instance.weight.max(1));
        total += weight;
        score.score += weight;
        if best.is_none_or(|(_, top)| score.score > top) {
            best = Some((index, score.score));
        }
    }
    let (index, _) = best?;
    scores[index].score -= total;
    Some(index)
}

/// Lay `scores` out in the order of `instances`, keeping the score of each instance that
/// stays and starting new ones at zero.
fn realign<I: Borrow<ServiceInstance>>(scores: &mut Vec<Score>, instances: &[I]) {
    // Only when the list changed: rare enough for a map, whatever its length.
    let old = std::mem::take(scores);
    let kept: foldhash::HashMap<&str, i64> = old.iter().map(|s| (s.id.as_str(), s.score)).collect();
    scores.extend(instances.iter().map(|instance| {
        let id = &instance.borrow().id;
        Score {
            id: id.clone(),
            score: kept.get(id.as_str()).copied().unwrap_or(0),
        }
    }));
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
    /// The service's change index (see [`Registry::service`]): ask again with it to wait
    /// for the next change.
    pub index: u64,
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
        let view = self.registry.service(service).await?;
        let mut discovered = self.choose(service, view.instances);
        discovered.index = view.index;
        Ok(discovered)
    }

    /// [`Discovery::discover`] as a blocking query (Consul's): answered at once when the
    /// service's index is no longer `index` (it moved on, or went back because Redis came
    /// back empty), else as soon as a change to the service is announced, or after `wait`
    /// with the same answer and index.
    pub async fn discover_after(
        &self,
        service: &str,
        index: u64,
        wait: std::time::Duration,
    ) -> Result<Discovered> {
        // Watch before reading, so a change between the read and the wait is not missed.
        let mut changes = self.registry.watch();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let found = self.discover(service).await?;
            if found.index != index {
                return Ok(found);
            }
            loop {
                match tokio::time::timeout_at(deadline, changes.recv()).await {
                    Err(_) | Ok(Err(RecvError::Closed)) => return Ok(found),
                    Ok(Ok(change)) if change.instance.name == service => break,
                    Ok(Ok(_)) => {}
                    // Changes were missed: one of them may be this service's.
                    Ok(Err(RecvError::Lagged(_))) => break,
                }
            }
        }
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
            index: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registration;
    use std::collections::BTreeMap;

    fn instance(id: &str, weight: i64) -> ServiceInstance {
        let mut registration = Registration::new("svc", "127.0.0.1", 8080);
        registration.weight = Some(weight);
        let mut instance = ServiceInstance::from_registration(
            &registration,
            std::time::Duration::from_secs(30),
            chrono::Utc::now(),
        );
        instance.id = id.to_owned();
        instance
    }

    /// The algorithm by the book: scores by id, instances that left forgotten, ineligible
    /// ones skipped with their scores kept.
    fn by_the_book(
        scores: &mut BTreeMap<String, i64>,
        list: &[ServiceInstance],
        eligible: &[bool],
    ) -> Option<usize> {
        scores.retain(|id, _| list.iter().any(|i| i.id == *id));
        let mut total = 0;
        let mut best: Option<(usize, i64)> = None;
        for (index, instance) in list.iter().enumerate() {
            let score = scores.entry(instance.id.clone()).or_insert(0);
            if !eligible[index] {
                continue;
            }
            let weight = i64::from(instance.weight);
            total += weight;
            *score += weight;
            if best.is_none_or(|(_, top)| *score > top) {
                best = Some((index, *score));
            }
        }
        let (index, _) = best?;
        *scores.get_mut(&list[index].id).unwrap() -= total;
        Some(index)
    }

    #[test]
    fn follows_nginx_sequence() {
        let list = [instance("a", 5), instance("b", 1), instance("c", 1)];
        let balancer = SmoothWeighted::new();
        let picks: String = (0..14)
            .map(|_| ["a", "b", "c"][balancer.pick("svc", &list).unwrap()])
            .collect();
        assert_eq!(picks, "aabacaaaabacaa");
        assert_eq!(
            SmoothWeighted::new().pick::<ServiceInstance>("svc", &[]),
            None
        );
    }

    #[test]
    fn a_reordered_list_keeps_the_scores() {
        let list = [instance("a", 5), instance("b", 1), instance("c", 1)];
        let reversed = [list[2].clone(), list[1].clone(), list[0].clone()];
        let balancer = SmoothWeighted::new();
        let mut picks = String::new();
        for round in 0..7 {
            let id = if round % 2 == 0 {
                &list[balancer.pick("svc", &list).unwrap()].id
            } else {
                &reversed[balancer.pick("svc", &reversed).unwrap()].id
            };
            picks.push_str(id);
        }
        assert_eq!(picks, "aabacaa");
    }

    #[test]
    fn matches_the_book_through_changes_and_skips() {
        for size in [3usize, 24] {
            let everyone: Vec<ServiceInstance> = (0..size)
                .map(|i| instance(&format!("i{i}"), (i % 4 + 1) as i64))
                .collect();
            let balancer = SmoothWeighted::new();
            let mut book = BTreeMap::new();
            let mut seed = 0x9e37_79b9_u64;
            let mut next = move || {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                seed >> 33
            };
            let mut list = everyone.clone();
            for round in 0..2_000 {
                if round % 50 == 0 {
                    // Someone leaves or comes back.
                    list = everyone
                        .iter()
                        .filter(|_| next() % 5 != 0)
                        .cloned()
                        .collect();
                }
                let eligible: Vec<bool> = list.iter().map(|_| next() % 7 != 0).collect();
                let mut asked = Vec::new();
                let picked = balancer.pick_among("svc", &list, |index, instance| {
                    asked.push(index);
                    assert_eq!(instance.id, list[index].id);
                    eligible[index]
                });
                assert_eq!(asked, (0..list.len()).collect::<Vec<_>>());
                assert_eq!(
                    picked,
                    by_the_book(&mut book, &list, &eligible),
                    "round {round}"
                );
            }
        }
    }
}
