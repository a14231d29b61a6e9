//! # omc-orchestra-client
//!
//! The SDK a business service of the OMC ERP uses to talk to the orchestra registry over
//! HTTP: register with one call (heartbeats run in the background, and the instance comes
//! back by itself if the registry forgets it), discover instances of other services, list
//! what is registered.
//!
//! ```no_run
//! use omc_orchestra_client::{OrchestraClient, Registration};
//!
//! # async fn demo() -> omc_orchestra_client::Result<()> {
//! // `SERVICE_REGISTRY_URL` (default http://127.0.0.1:3010) and, if set, `JWT_SECRET`.
//! let client = OrchestraClient::from_env().with_service_name("pricing-service");
//!
//! let mut registration = Registration::new("pricing-service", "10.0.0.5", 3006);
//! registration.tags = vec!["pricing".into()];
//! registration.dependencies = vec!["postgres".into(), "redis".into()];
//! let registered = client.register(registration).await?;
//! println!("registered as {}", registered.id());
//!
//! if let Some(inventory) = client.discover("inventory-service").await? {
//!     println!("inventory at {}", inventory.url());
//! }
//!
//! tokio::signal::ctrl_c().await.ok();
//! registered.deregister().await?;
//! # Ok(())
//! # }
//! ```
//!
//! With [`OrchestraClient::with_jwt_secret`] every request carries an HS256
//! `Authorization: Bearer` token. Every failure is a [`ClientError`].

mod auth;
mod client;
mod discovery;
mod error;
mod logs;
mod registered;
mod work;

pub use client::{
    OrchestraClient, DEFAULT_JOBS_URL, DEFAULT_LOGGING_URL, DEFAULT_REGISTRY_URL, DEFAULT_SUBJECT,
    DEFAULT_TIMEOUT,
};
pub use discovery::Discovery;
pub use error::{ClientError, Result};
pub use logs::{LayerOptions, Logger, OrchestraLayer, ShipperStats};
pub use registered::{RegisterOptions, Registered};

pub use omc_orchestra::logs::{LogCategory, LogLevel, LogRecord};
pub use omc_orchestra::registry::{HealthStatus, Registration, ServiceFilter, ServiceInstance};
