//! The answer of `GET /registry/discovery/{service}`.

use omc_orchestra::registry::ServiceInstance;
use serde::{Deserialize, Serialize};

/// What discovery knows about one service, as the registry answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discovery {
    /// The service asked for.
    pub service: String,
    /// The instances discovery serves (the healthy ones, or every known one in panic mode).
    #[serde(default)]
    pub instances: Vec<ServiceInstance>,
    /// The instance the registry's balancer picked for this call.
    #[serde(default)]
    pub selected: Option<ServiceInstance>,
    /// How many instances of the service are registered, healthy or not.
    #[serde(default)]
    pub total: usize,
    /// How many of them are healthy.
    #[serde(default)]
    pub healthy: usize,
    /// True when too many instances are down and discovery serves them all anyway.
    #[serde(default)]
    pub panic_mode: bool,
    /// The service's change index: ask again with it
    /// ([`OrchestraClient::discover_after`](crate::OrchestraClient::discover_after)) to
    /// wait for the next change.
    #[serde(default)]
    pub index: u64,
}

impl Discovery {
    /// What discovery knows of a service with no instance to offer.
    pub(crate) fn empty(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            instances: Vec::new(),
            selected: None,
            total: 0,
            healthy: 0,
            panic_mode: false,
            index: 0,
        }
    }
}
