//! Discovery answered from a local copy of each service a process asks for, kept current
//! by blocking queries (`?index=N&wait=30s`, as Consul's agents do): after the first call
//! for a service, a call costs no request, and a change reaches the copy within one
//! round trip. A process sees its own registrations and deregistrations at once: the
//! first call after one fetches the service again instead of waiting for the copy.

use crate::{Discovery, OrchestraClient, Result};
use omc_orchestra::registry::{ServiceInstance, SmoothWeighted};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// How long each blocking query waits for a change.
const WAIT: Duration = Duration::from_secs(30);
/// The pause after a failed query before the next, so an unreachable registry is not
/// hammered; the copy keeps serving what it last knew meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The local copies, one per service asked for.
pub(crate) struct Catalog {
    client: OrchestraClient,
    copies: Mutex<HashMap<String, Arc<Copy>>>,
    stop: watch::Receiver<bool>,
}

/// One service's copy and the balancer that picks among its instances.
struct Copy {
    current: RwLock<Discovery>,
    balancer: SmoothWeighted,
    /// The client's registry write count when `current` was last fetched on demand.
    writes_seen: AtomicU64,
}

impl Catalog {
    /// Copies fed through `client`, until `stop` turns true.
    pub(crate) fn new(client: OrchestraClient, stop: watch::Receiver<bool>) -> Self {
        Self {
            client,
            copies: Mutex::new(HashMap::new()),
            stop,
        }
    }

    /// The instance of `service` to call now, weighted round-robin over the copy's
    /// instances; the first call for a service fetches it and starts following it.
    pub(crate) async fn pick(&self, service: &str) -> Result<Option<ServiceInstance>> {
        let copy = self.copy(service).await?;
        let writes = self.client.registry_writes();
        if copy.writes_seen.load(Ordering::Acquire) < writes {
            // This process changed the registry since: its own write must show now.
            let fresh = self
                .client
                .discover_after(service, 0, Duration::ZERO)
                .await?;
            copy.writes_seen.fetch_max(writes, Ordering::AcqRel);
            *copy.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        let current = copy.current.read().unwrap_or_else(|e| e.into_inner());
        Ok(copy
            .balancer
            .pick(service, &current.instances)
            .map(|i| current.instances[i].clone()))
    }

    async fn copy(&self, service: &str) -> Result<Arc<Copy>> {
        if let Some(copy) = self.copies().get(service) {
            return Ok(copy.clone());
        }
        let writes = self.client.registry_writes();
        let first = self
            .client
            .discover_after(service, 0, Duration::ZERO)
            .await?;
        let copy = Arc::new(Copy {
            current: RwLock::new(first),
            balancer: SmoothWeighted::new(),
            writes_seen: AtomicU64::new(writes),
        });
        let mut copies = self.copies();
        // Another call may have made it meanwhile: keep the one that is followed.
        if let Some(made) = copies.get(service) {
            return Ok(made.clone());
        }
        copies.insert(service.to_owned(), copy.clone());
        tokio::spawn(follow(
            self.client.clone(),
            service.to_owned(),
            Arc::downgrade(&copy),
            self.stop.clone(),
        ));
        Ok(copy)
    }

    fn copies(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Copy>>> {
        self.copies.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keep `copy` current until it is dropped or `stop` turns true.
async fn follow(
    client: OrchestraClient,
    service: String,
    copy: Weak<Copy>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(index) = copy.upgrade().map(|c| index_of(&c)) else {
            return;
        };
        let answer = tokio::select! {
            answer = client.discover_after(&service, index, WAIT) => answer,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match (answer, copy.upgrade()) {
            (_, None) => return,
            (Ok(found), Some(copy)) => {
                *copy.current.write().unwrap_or_else(|e| e.into_inner()) = found;
            }
            (Err(err), Some(_)) => {
                tracing::debug!(%service, error = %err, "discovery copy not refreshed; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

fn index_of(copy: &Copy) -> u64 {
    copy.current.read().unwrap_or_else(|e| e.into_inner()).index
}
