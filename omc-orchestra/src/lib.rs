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
//! Features: `redis` adds the Redis backends; `gateway`, `health` (checker, probes,
//! system monitor, alerts), `cron` (schedules) and `file-logs` (the rotating file sink)
//! add the server-side engines (all on by default; without them the crate is the model
//! types, tokens and the memory stores, which is what the SDK uses); `testkit` exports
//! the conformance suites every backend runs; `openapi` derives OpenAPI schemas for the
//! model types.

/// A `Deserialize` for a wire enum with `ALL` and `as_str`: its name in any letter case,
/// since TypeScript enums are often upper-case (`EventPriority.NORMAL`, `LogLevel.WARN`);
/// it still answers in the documented lower case.
macro_rules! any_case_names {
    ($ty:ty) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Name;
                impl serde::de::Visitor<'_> for Name {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("one of the names of ")?;
                        f.write_str(stringify!($ty))
                    }

                    fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<$ty, E> {
                        <$ty>::ALL
                            .iter()
                            .copied()
                            .find(|v| v.as_str().eq_ignore_ascii_case(name))
                            .ok_or_else(|| {
                                let names = <$ty>::ALL.map(|v| format!("`{}`", v.as_str()));
                                E::custom(format!(
                                    "unknown variant `{name}`, expected one of {}",
                                    names.join(", ")
                                ))
                            })
                    }
                }
                deserializer.deserialize_str(Name)
            }
        }
    };
}

pub mod access;
pub mod backend;
pub mod clock;
pub mod durability;
pub mod error;
pub mod events;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "health")]
pub mod health;
pub mod jobs;
pub mod logs;
pub mod per_thread;
pub mod redact;
pub mod registry;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
#[cfg(feature = "redis")]
pub mod topology;

pub use backend::Backends;
#[cfg(feature = "redis")]
pub use backend::RedisStore;
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use error::{Error, ErrorBody, Result};
#[cfg(feature = "redis")]
pub use topology::{RedisConnection, Topology};
