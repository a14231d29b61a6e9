//! The record: levels, categories and validation.

use crate::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Longest accepted message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest accepted service name, request, trace or span id, in bytes.
pub const MAX_NAME_BYTES: usize = 253;
/// Most structured fields one record may carry.
pub const MAX_FIELDS: usize = 128;
/// Largest serialized `fields` object, in bytes.
pub const MAX_FIELDS_BYTES: usize = 64 * 1024;

/// Log levels, as Winston names them (the NestJS services already use these), most severe
/// first: `Error < Warn < …` in the derived order, so "this level and above" is `<=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors.
    Error,
    /// Warnings.
    Warn,
    /// Information.
    Info,
    /// HTTP access records.
    Http,
    /// Verbose detail.
    Verbose,
    /// Debugging.
    Debug,
}

any_case_names!(LogLevel);

impl LogLevel {
    /// Every level, most severe first.
    pub const ALL: [LogLevel; 6] = [
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Http,
        Self::Verbose,
        Self::Debug,
    ];

    /// The OpenTelemetry severity number of the level (ERROR 17, WARN 13, INFO 9,
    /// DEBUG3 7 for `http`, DEBUG2 6 for `verbose`, DEBUG 5).
    pub fn severity_number(self) -> u8 {
        match self {
            Self::Error => 17,
            Self::Warn => 13,
            Self::Info => 9,
            Self::Http => 7,
            Self::Verbose => 6,
            Self::Debug => 5,
        }
    }

    /// The wire name (`error`, `warn`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Http => "http",
            Self::Verbose => "verbose",
            Self::Debug => "debug",
        }
    }

    /// Whether a record at this level passes a "`min` and above" filter.
    pub fn at_least(self, min: LogLevel) -> bool {
        self <= min
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(
                    "level",
                    format!("unknown level `{s}` (error, warn, info, http, verbose, debug)"),
                )
            })
    }
}

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogCategory {
    /// The default.
    #[default]
    Application,
    /// Security events.
    Security,
    /// Performance figures.
    Performance,
    /// Business transactions.
    Business,
    /// System events.
    System,
    /// Audit trail.
    Audit,
}

any_case_names!(LogCategory);

impl LogCategory {
    /// Every category.
    pub const ALL: [LogCategory; 6] = [
        Self::Application,
        Self::Security,
        Self::Performance,
        Self::Business,
        Self::System,
        Self::Audit,
    ];

    /// The wire name (`application`, `security`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Security => "security",
            Self::Performance => "performance",
            Self::Business => "business",
            Self::System => "system",
            Self::Audit => "audit",
        }
    }
}

impl fmt::Display for LogCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogCategory {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(
                    "category",
                    format!(
                        "unknown category `{s}` (application, security, performance, \
                         business, system, audit)"
                    ),
                )
            })
    }
}

/// One structured log record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Level.
    pub level: LogLevel,
    /// Category.
    #[serde(default)]
    pub category: LogCategory,
    /// The service that logged it.
    pub service: String,
    /// The message.
    pub message: String,
    /// Structured fields.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Span id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
}

impl LogRecord {
    /// An application record of `level` from `service` at `timestamp`.
    pub fn new(
        timestamp: DateTime<Utc>,
        level: LogLevel,
        service: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            timestamp,
            level,
            category: LogCategory::Application,
            service: service.into(),
            message: message.into(),
            fields: serde_json::Map::new(),
            request_id: None,
            trace_id: None,
            span_id: None,
        }
    }

    /// The same record in `category`.
    pub fn with_category(mut self, category: LogCategory) -> Self {
        self.category = category;
        self
    }

    /// The same record with field `name` set to `value`.
    pub fn with_field(mut self, name: impl Into<String>, value: serde_json::Value) -> Self {
        self.fields.insert(name.into(), value);
        self
    }

    /// The OpenTelemetry severity number of the record's level.
    pub fn severity_number(&self) -> u8 {
        self.level.severity_number()
    }

    /// Check every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<()> {
        if self.service.trim().is_empty() || self.service.len() > MAX_NAME_BYTES {
            return Err(Error::invalid("service", "must be 1-253 bytes"));
        }
        if self.message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::invalid(
                "message",
                format!("at most {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        for (field, id) in [
            ("requestId", &self.request_id),
            ("traceId", &self.trace_id),
            ("spanId", &self.span_id),
        ] {
            if id.as_ref().is_some_and(|id| id.len() > MAX_NAME_BYTES) {
                return Err(Error::invalid(field, "at most 253 bytes"));
            }
        }
        if self.fields.len() > MAX_FIELDS {
            return Err(Error::invalid(
                "fields",
                format!("at most {MAX_FIELDS} fields"),
            ));
        }
        if !self.fields.is_empty() {
            let mut size = ByteCount(0);
            if serde_json::to_writer(&mut size, &self.fields).is_err() || size.0 > MAX_FIELDS_BYTES
            {
                return Err(Error::invalid(
                    "fields",
                    format!("at most {MAX_FIELDS_BYTES} bytes as JSON"),
                ));
            }
        }
        Ok(())
    }
}

/// Counts what is written to it; sizes JSON without building it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Validate every record of a batch; the error names the field and, for batches of more
/// than one, the index of the first bad record.
pub fn validate_batch(records: &[LogRecord]) -> Result<()> {
    for (index, record) in records.iter().enumerate() {
        if let Err(err) = record.validate() {
            return Err(match err {
                Error::Invalid { field, reason } if records.len() > 1 => {
                    Error::invalid(field, format!("record {index}: {reason}"))
                }
                other => other,
            });
        }
    }
    Ok(())
}
