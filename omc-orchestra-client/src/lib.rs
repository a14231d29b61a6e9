//! # omc-orchestra-client
//!
//! The SDK a business service of the OMC ERP uses to talk to the orchestra over HTTP:
//! register (heartbeats run in the background), publish events, log, enqueue jobs,
//! discover other services and run jobs as a worker, one line each, with the service's
//! name given once. This crate alone is enough: the model types are re-exported.
//!
//! ```no_run
//! use omc_orchestra_client::{json, EventPriority, Orchestra};
//!
//! # async fn demo() -> omc_orchestra_client::Result<()> {
//! # let data = json!({"stationId": "STN001", "newPrice": 7.45});
//! // SERVICE_REGISTRY_URL, JOB_SCHEDULER_URL, LOGGING_SERVICE_URL, ORCHESTRA_TOKEN
//! let orc = Orchestra::from_env("pricing-service");
//! let me = orc.register(3006).await?; // host from SERVICE_HOST/HOSTNAME, health /health
//! orc.emit("PRICE_UPDATED", json!({"stationId": "STN001"})).await?;
//! orc.event("PRICE_UPDATED", data).priority(EventPriority::High).tags(["pricing"]).send().await?;
//! orc.log().info("Price calculation completed", json!({"calculationTime": 150})).await?;
//! orc.enqueue("price-calculation", json!({"stationId": "STN001"})).await?;
//! let inventory = orc.discover("inventory-service").await?;
//! orc.worker().handle("price-calculation", |job| async move { Ok(json!({"total": 7.45})) }).run().await?;
//! me.deregister().await?; // and orc.shutdown() for everything at once
//! # let _ = inventory;
//! # Ok(())
//! # }
//! ```
//!
//! - [`Orchestra::from_env`] reads the servers' URLs (default the local ports 3010, 3013
//!   and 3014 of `orchestra up`) and `ORCHESTRA_TOKEN` (or `JWT_SECRET`, from which the
//!   client signs its own tokens).
//! - [`Registered`] keeps the instance alive; dropped without
//!   [`Registered::deregister`] it says so in a warning.
//! - [`Worker::run`] takes jobs over the jobs server's lease API (no Redis credentials),
//!   runs up to [`Worker::concurrency`] at once, extends each lease while its handler
//!   runs, fails a job whose handler errs or panics, and drains on
//!   [`Orchestra::shutdown`], Ctrl-C or SIGTERM.
//! - [`Orchestra::shutdown`] drains the workers, deregisters and flushes the
//!   [`Orchestra::tracing_layer`].
//!
//! Underneath, [`OrchestraClient`] is each server's HTTP API as async methods
//! ([`Orchestra::client`]). Every failure is a [`ClientError`].

mod auth;
mod catalog;
mod client;
mod discovery;
mod error;
mod logs;
mod operate;
mod orchestra;
mod registered;
mod work;
mod worker;

pub use client::{
    OrchestraClient, DEFAULT_JOBS_URL, DEFAULT_LOGGING_URL, DEFAULT_REGISTRY_URL, DEFAULT_SUBJECT,
    DEFAULT_TIMEOUT,
};
pub use discovery::Discovery;
pub use error::{ClientError, Result};
pub use logs::{LayerOptions, Logger, OrchestraLayer, ShipperStats};
pub use operate::LogStream;
pub use orchestra::Orchestra;
pub use registered::{RegisterOptions, Registered};
pub use work::EventBuilder;
pub use worker::{JobResult, Worker};

pub use omc_orchestra::events::EventQuery;
pub use omc_orchestra::events::{Event, EventPriority, NewEvent};
pub use omc_orchestra::jobs::{
    Backoff, BackoffKind, Job, JobFilter, JobPriority, JobState, NewJob,
};
pub use omc_orchestra::logs::{LogCategory, LogLevel, LogPage, LogRecord};
pub use omc_orchestra::registry::{HealthStatus, Registration, ServiceFilter, ServiceInstance};
/// Trace context (and, with the `otlp` feature, span export): run work inside
/// `telemetry::within(Some(trace), work)` and the SDK's calls carry the trace on.
pub use omc_orchestra::telemetry;
/// JSON values for event data, job data and log fields, so `json!` needs no other crate.
pub use serde_json::{self, json, Value};
