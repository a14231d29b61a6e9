//! What every server shares: errors, extractors, the tower stack and metrics.

pub mod access;
pub mod error;
pub mod extract;
pub mod layers;
pub mod metrics;
pub mod origins;
pub mod serve;

pub use access::Guard;
pub use error::{ApiError, ApiResult, ErrorBody};
pub use extract::{ApiJson, ApiQuery};
pub use layers::{with_stack, StackConfig};
pub use metrics::HttpMetrics;
pub use origins::Origins;
