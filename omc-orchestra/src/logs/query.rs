//! Searching: filters, paging with a cursor, and what a page holds.

use super::model::{LogCategory, LogLevel, LogRecord};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Records returned by a search when the query sets no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// Most records one search returns.
pub const MAX_LIMIT: usize = 10_000;
/// Most stored records one search looks at before it answers with what it found and a
/// cursor to go on from; keeps one request's work bounded whatever the filters.
pub const SCAN_BUDGET: usize = 200_000;

/// A search or a tail filter; every field that is set must match.
///
/// Results come newest first, where newest means most recently written (records of one
/// batch count as written in batch order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    /// This level or more severe (`warn` finds `warn` and `error`).
    pub level: Option<LogLevel>,
    /// Category.
    pub category: Option<LogCategory>,
    /// Service.
    pub service: Option<String>,
    /// Timestamp at or after.
    pub since: Option<DateTime<Utc>>,
    /// Timestamp before.
    pub until: Option<DateTime<Utc>>,
    /// The message contains this, ignoring case.
    pub text: Option<String>,
    /// The message contains every one of these whitespace-separated words as a whole
    /// word, in any order, ignoring case.
    pub words: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Trace id.
    pub trace_id: Option<String>,
    /// Structured fields that must equal these values (a string field compares as is,
    /// any other JSON value by its JSON text: `42`, `true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    /// Most records returned (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<usize>,
    /// Go on after this cursor (from a previous page's `nextCursor`).
    pub cursor: Option<String>,
}

/// One page of search results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LogPage {
    /// Matching records, newest first.
    pub records: Vec<LogRecord>,
    /// Pass as `cursor` to get the next page; absent when nothing older is left.
    pub next_cursor: Option<String>,
}

impl LogQuery {
    /// The limit to apply: the query's, clamped to 1..=[`MAX_LIMIT`].
    pub fn effective_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }

    /// The same filters on `service`.
    pub fn for_service(service: impl Into<String>) -> Self {
        Self {
            service: Some(service.into()),
            ..Self::default()
        }
    }

    /// Whether `record` passes the query's filters (limit and cursor aside).
    pub fn matches(&self, record: &LogRecord) -> bool {
        self.level.is_none_or(|l| record.level.at_least(l))
            && self.category.is_none_or(|c| record.category == c)
            && self.service.as_ref().is_none_or(|s| *s == record.service)
            && self.since.is_none_or(|s| record.timestamp >= s)
            && self.until.is_none_or(|u| record.timestamp < u)
            && same(&self.request_id, &record.request_id)
            && same(&self.trace_id, &record.trace_id)
            && self
                .fields
                .iter()
                .all(|(name, want)| record.fields.get(name).is_some_and(|v| equals(v, want)))
            && self
                .text
                .as_ref()
                .is_none_or(|t| contains_ignoring_case(&record.message, t))
            && self
                .words
                .as_ref()
                .is_none_or(|w| has_all_words(&record.message, w))
    }
}

fn same(want: &Option<String>, have: &Option<String>) -> bool {
    want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
}

fn equals(value: &serde_json::Value, want: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == want,
        // Compared as JSON text (`42`, `true`); `Value == str` would match strings only.
        other => {
            let text = other.to_string();
            text == want
        }
    }
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if needle.is_ascii() && haystack.is_ascii() {
        let needle = needle.as_bytes();
        return needle.is_empty()
            || haystack
                .as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn has_all_words(message: &str, words: &str) -> bool {
    let message = message.to_lowercase();
    let present: Vec<&str> = message
        .split(|c: char| !c.is_alphanumeric() && c != '_' && c != '-')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .split_whitespace()
        .all(|w| present.contains(&w.to_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_words() {
        assert!(contains_ignoring_case(
            "Price Calculation completed",
            "calculation c"
        ));
        assert!(!contains_ignoring_case("Price", "prices"));
        assert!(has_all_words(
            "Price calculation completed",
            "COMPLETED price"
        ));
        assert!(!has_all_words("Price calculation completed", "calc"));
    }
}
