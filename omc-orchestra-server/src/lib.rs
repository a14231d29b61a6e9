//! # omc-orchestra-server
//!
//! The thin servers of omc-orchestra: routing, wire-format validation and wiring over the
//! library. The `orchestra` binary runs them; tests and custom deployments start them
//! with [`app::App`].
//!
//! ```no_run
//! use omc_orchestra_server::app::{App, Config, ServerKind};
//!
//! # async fn demo() {
//! let app = App::start(Config::ephemeral(), &ServerKind::ALL).await.unwrap();
//! println!("registry at {}", app.url(ServerKind::Registry));
//! app.shutdown().await;
//! # }
//! ```

pub mod app;
pub mod cli;
pub mod config;
mod dashboard;
mod event_gauges;
mod events_api;
mod gateway_api;
mod gateway_lanes;
pub mod health_api;
pub mod http;
mod jobs_api;
pub mod jobs_dispatch;
mod jobs_lease;
pub mod logs_api;
mod narrate;
mod ops;
pub mod registry_api;
pub mod status;
mod system_gauges;
mod ws;
mod ws_dashboard;
