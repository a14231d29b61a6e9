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
}
