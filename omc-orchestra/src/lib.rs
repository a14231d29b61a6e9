//! # omc-orchestra
//!
//! The service-orchestration layer of the OMC ERP as a library: a service registry with
//! discovery, an event bus, a job queue, a log store and health probes, each a small trait
//! with an in-memory and a Redis backend, plus the engines built on them.
//!
//! Build the stores once with [`Backends`] and hand the engines the handles they need.
//!
//! ```
//! use omc_orchestra::registry::{Discovery, Registration};
//! use omc_orchestra::Backends;
//!
//! # async fn demo() -> omc_orchestra::Result<()> {
//! let backends = Backends::memory();
//! let mut registration = Registration::new("pricing-service", "10.0.0.5", 3006);
//! registration.tags = vec!["pricing".into()];
//! let instance = backends.registry.register(registration).await?;
//!
//! let discovery = Discovery::new(backends.registry.clone());
//! let found = discovery.discover("pricing-service").await?;
//! assert_eq!(found.selected.map(|i| i.id), Some(instance.id));
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! Features: `redis` (default) adds the Redis backends; `testkit` exports the conformance
//! suites every backend runs; `openapi` derives OpenAPI schemas for the model types.

pub mod access;
pub mod backend;
pub mod clock;
pub mod durability;
pub mod error;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod health;
pub mod jobs;
pub mod logs;
pub mod per_thread;
pub mod redact;
pub mod registry;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use backend::Backends;
#[cfg(feature = "redis")]
pub use backend::RedisStore;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{Error, Result};
