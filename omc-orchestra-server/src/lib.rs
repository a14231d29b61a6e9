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
pub mod dashboard;
pub mod event_gauges;
pub mod events_api;
pub mod gateway_api;
pub mod gateway_lanes;
pub mod health_api;
pub mod http;
pub mod jobs_api;
pub mod jobs_dispatch;
pub mod jobs_lease;
pub mod logs_api;
pub mod narrate;
pub mod ops;
pub mod registry_api;
pub mod status;
pub mod system_gauges;
pub mod ws;
pub mod ws_dashboard;
