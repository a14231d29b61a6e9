//! The in-memory registry: one process, no dependencies.

use super::{
    page_cursor, parse_page_cursor, ChangeKind, HealthStatus, Registration, Registry,
    RegistryChange, RegistryOptions, ServiceFilter, ServiceInstance, ServiceInstances, ServicePage,
    WATCH_CAPACITY,
};
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use parking_lot::RwLock;
use std::collections::{BTreeSet, HashMap};
use tokio::sync::broadcast;

#[derive(Default)]
struct State {
    /// Instances by id; `status` is refreshed on the way out.
    instances: HashMap<String, ServiceInstance>,
    /// `name|host|port` → id.
    by_address: HashMap<String, String>,
    /// Ids whose expiry has been announced.
    expired: std::collections::HashSet<String>,
    /// Service name → ids of its instances, so one service is read without the rest.
    by_service: HashMap<String, BTreeSet<String>>,
    /// (name, id) of every instance, in listing order, for pages.
    ordered: BTreeSet<(String, String)>,
    /// Tag → (name, id) of the instances carrying it, in listing order, so a listing by
    /// tag reads those alone.
    by_tag: HashMap<String, BTreeSet<(String, String)>>,
    /// Type → (name, id) of its instances, in listing order.
    by_type: HashMap<String, BTreeSet<(String, String)>>,
    /// Service name → its change index, bumped as each change is announced; under the
    /// same lock as the instances, so discovery takes one read lock.
    indexes: HashMap<String, u64>,
}

/// Add `key` to the set `facet` names in `sets`.
fn file_under(
    sets: &mut HashMap<String, BTreeSet<(String, String)>>,
    facet: &str,
    key: (String, String),
) {
    sets.entry(facet.to_owned()).or_default().insert(key);
}

/// Remove `key` from the set `facet` names in `sets`, and the set once empty.
fn unfile(
    sets: &mut HashMap<String, BTreeSet<(String, String)>>,
    facet: &str,
    key: &(String, String),
) {
    if let Some(set) = sets.get_mut(facet) {
        set.remove(key);
        if set.is_empty() {
            sets.remove(facet);
        }
    }
}

impl State {
    fn index(&mut self, instance: &ServiceInstance) {
        let key = (instance.name.clone(), instance.id.clone());
        for tag in &instance.tags {
            file_under(&mut self.by_tag, tag, key.clone());
        }
        file_under(&mut self.by_type, &instance.service_type, key.clone());
        self.ordered.insert(key);
        self.by_service
            .entry(instance.name.clone())
            .or_default()
            .insert(instance.id.clone());
    }

    fn unindex(&mut self, instance: &ServiceInstance) {
        let key = (instance.name.clone(), instance.id.clone());
        for tag in &instance.tags {
            unfile(&mut self.by_tag, tag, &key);
        }
        unfile(&mut self.by_type, &instance.service_type, &key);
        self.ordered.remove(&key);
        if let Some(ids) = self.by_service.get_mut(&instance.name) {
            ids.remove(&instance.id);
            if ids.is_empty() {
                self.by_service.remove(&instance.name);
            }
        }
    }
}

/// A registry held in this process's memory.
pub struct MemoryRegistry {
    state: RwLock<State>,
    changes: broadcast::Sender<RegistryChange>,
    clock: SharedClock,
    options: RegistryOptions,
}

impl std::fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRegistry")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new(clock: SharedClock, options: RegistryOptions) -> Self {
        Self {
            state: RwLock::new(State::default()),
            changes: broadcast::channel(WATCH_CAPACITY).0,
            clock,
            options,
        }
    }

    fn announce(
        &self,
        kind: ChangeKind,
        instance: &ServiceInstance,
        previous_status: Option<HealthStatus>,
    ) -> RegistryChange {
        let change = RegistryChange {
            kind,
            instance: instance.clone(),
            previous_status,
            at: self.clock.now(),
        };
        *self
            .state
            .write()
            .indexes
            .entry(instance.name.clone())
            .or_default() += 1;
        // No watcher is not an error.
        let _ = self.changes.send(change.clone());
        change
    }

    fn view(&self, instance: &ServiceInstance, expired: bool) -> ServiceInstance {
        let mut view = instance.clone();
        view.refresh_status(self.clock.now());
        if expired {
            view.status = HealthStatus::Critical;
        }
        view
    }
}

#[async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, registration: Registration) -> Result<ServiceInstance> {
        registration.validate()?;
        let now = self.clock.now();
        let mut instance =
            ServiceInstance::from_registration(&registration, self.options.default_ttl, now);
        let address = instance.address_key();
        let mut replaced = None;
        let mut moved = None;
        let (kind, previous) = {
            let mut state = self.state.write();
            if let Some(old_id) = state.by_address.get(&address).cloned() {
                if old_id != instance.id {
                    state.expired.remove(&old_id);
                    replaced = state.instances.remove(&old_id);
                    if let Some(old) = &replaced {
                        state.unindex(old);
                    }
                }
            }
            let previous = state.instances.get(&instance.id).cloned();
            if let Some(previous) = &previous {
                state.unindex(previous);
                instance.registered_at = previous.registered_at;
                let old_address = previous.address_key();
                if old_address != address {
                    state.by_address.remove(&old_address);
                }
            }
            let was_expired = state.expired.remove(&instance.id);
            state.by_address.insert(address, instance.id.clone());
            state.index(&instance);
            state
                .instances
                .insert(instance.id.clone(), instance.clone());
            match previous {
                Some(previous) => {
                    let before = self.view(&previous, was_expired);
                    let status = before.status;
                    if previous.name != instance.name {
                        moved = Some(before);
                    }
                    (ChangeKind::Updated, Some(status))
                }
                None => (ChangeKind::Registered, None),
            }
        };
        if let Some(old) = replaced {
            self.announce(ChangeKind::Deregistered, &old, Some(old.status));
        }
        // Moved to another service: it left the one it was in.
        if let Some(old) = moved {
            self.announce(ChangeKind::Deregistered, &old, Some(old.status));
        }
        instance.refresh_status(now);
        self.announce(kind, &instance, previous);
        Ok(instance)
    }

    async fn heartbeat(&self, id: &str) -> Result<ServiceInstance> {
        let now = self.clock.now();
        let (instance, previous) = {
            let mut state = self.state.write();
            let was_expired = state.expired.remove(id);
            let stored = state
                .instances
                .get_mut(id)
                .ok_or_else(|| Error::not_found("service", id))?;
            let mut before = stored.clone();
            before.refresh_status(now);
            if was_expired {
                before.status = HealthStatus::Critical;
            }
            stored.last_heartbeat = now;
            let mut after = stored.clone();
            after.refresh_status(now);
            (after, before.status)
        };
        if previous != instance.status {
            self.announce(ChangeKind::HealthChanged, &instance, Some(previous));
        }
        Ok(instance)
    }

    async fn deregister(&self, id: &str) -> Result<ServiceInstance> {
        let (instance, expired) = {
            let mut state = self.state.write();
            let instance = state
                .instances
                .remove(id)
                .ok_or_else(|| Error::not_found("service", id))?;
            state.by_address.remove(&instance.address_key());
            state.unindex(&instance);
            let expired = state.expired.remove(id);
            (instance, expired)
        };
        let instance = self.view(&instance, expired);
        self.announce(ChangeKind::Deregistered, &instance, Some(instance.status));
        Ok(instance)
    }

    async fn get(&self, id: &str) -> Result<ServiceInstance> {
        let state = self.state.read();
        let instance = state
            .instances
            .get(id)
            .ok_or_else(|| Error::not_found("service", id))?;
        Ok(self.view(instance, state.expired.contains(id)))
    }

    async fn list(&self, filter: &ServiceFilter) -> Result<Vec<ServiceInstance>> {
        if let Some(name) = &filter.name {
            let mut found = self.service(name).await?.instances;
            found.retain(|i| filter.matches(i));
            return Ok(found);
        }
        if filter.tag.is_some() || filter.service_type.is_some() {
            // One page holds them all, read from the tag's or the type's index.
            return Ok(self.list_page(filter, usize::MAX, None).await?.instances);
        }
        let mut found: Vec<ServiceInstance> = {
            let state = self.state.read();
            state
                .instances
                .values()
                .filter(|i| filter.name.as_ref().is_none_or(|n| *n == i.name))
                .map(|i| self.view(i, state.expired.contains(&i.id)))
                .filter(|i| filter.matches(i))
                .collect()
        };
        found.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(found)
    }

    async fn list_page(
        &self,
        filter: &ServiceFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<ServicePage> {
        use std::ops::Bound;
        let after = cursor.map(parse_page_cursor).transpose()?;
        let state = self.state.read();
        let start = match (&after, &filter.name) {
            (Some(position), _) => Bound::Excluded(position.clone()),
            // One service's instances start at its name.
            (None, Some(name)) => Bound::Included((name.clone(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        // A tag's or a type's instances alone, when the filter names one.
        let none = BTreeSet::new();
        let index = match (&filter.tag, &filter.service_type) {
            (Some(tag), _) => state.by_tag.get(tag).unwrap_or(&none),
            (None, Some(service_type)) => state.by_type.get(service_type).unwrap_or(&none),
            (None, None) => &state.ordered,
        };
        let mut page = ServicePage::default();
        for (name, id) in index.range((start, Bound::Unbounded)) {
            if filter.name.as_ref().is_some_and(|n| n != name) {
                if filter.name.as_ref().is_some_and(|n| n < name) {
                    break;
                }
                continue;
            }
            let Some(instance) = state.instances.get(id) else {
                continue;
            };
            let view = self.view(instance, state.expired.contains(id));
            if filter.matches(&view) {
                if page.instances.len() == limit {
                    let last = page.instances.last().map(|i| page_cursor(&i.name, &i.id));
                    page.next = last;
                    break;
                }
                page.instances.push(view);
            }
        }
        Ok(page)
    }

    async fn service(&self, name: &str) -> Result<ServiceInstances> {
        let state = self.state.read();
        let index = state.indexes.get(name).copied().unwrap_or(0);
        let instances = state.by_service.get(name).map_or_else(Vec::new, |ids| {
            ids.iter()
                .filter_map(|id| state.instances.get(id))
                .map(|i| self.view(i, state.expired.contains(&i.id)))
                .collect()
        });
        Ok(ServiceInstances { instances, index })
    }

    async fn set_health(&self, id: &str, status: HealthStatus) -> Result<ServiceInstance> {
        let (instance, previous) = {
            let mut state = self.state.write();
            let expired = state.expired.contains(id);
            let stored = state
                .instances
                .get_mut(id)
                .ok_or_else(|| Error::not_found("service", id))?;
            let before = self.view(stored, expired).status;
            stored.check_status = status;
            (self.view(stored, expired), before)
        };
        if previous != instance.status {
            self.announce(ChangeKind::HealthChanged, &instance, Some(previous));
        }
        Ok(instance)
    }

    async fn reap(&self) -> Result<Vec<RegistryChange>> {
        let now = self.clock.now();
        let grace = chrono::Duration::from_std(self.options.grace).unwrap_or(chrono::Duration::MAX);
        let mut removed = Vec::new();
        let mut marked = Vec::new();
        {
            let mut state = self.state.write();
            let stale: Vec<String> = state
                .instances
                .values()
                .filter(|i| i.is_expired(now))
                .map(|i| i.id.clone())
                .collect();
            for id in stale {
                let Some(instance) = state.instances.get(&id).cloned() else {
                    continue;
                };
                if now > instance.expires_at() + grace {
                    if let Some(instance) = state.instances.remove(&id) {
                        state.by_address.remove(&instance.address_key());
                        state.unindex(&instance);
                        let was_announced = state.expired.remove(&id);
                        removed.push((instance, was_announced));
                    }
                } else if state.expired.insert(id.clone()) {
                    let before = instance.check_status;
                    marked.push((self.view(&instance, true), before));
                }
            }
        }
        let mut changes = Vec::with_capacity(removed.len() + marked.len());
        for (instance, before) in marked {
            changes.push(self.announce(ChangeKind::HealthChanged, &instance, Some(before)));
        }
        for (instance, _) in removed {
            let view = self.view(&instance, true);
            changes.push(self.announce(ChangeKind::Expired, &view, Some(HealthStatus::Critical)));
        }
        Ok(changes)
    }

    fn watch(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }
}
