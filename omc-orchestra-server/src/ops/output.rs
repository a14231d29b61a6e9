//! How the operators' commands print: aligned tables for people, JSON for scripts,
//! colours only on a terminal without `NO_COLOR`, progress on a terminal's stderr.

use serde_json::Value;
use std::io::{IsTerminal, Write};

/// Where and how a command prints its answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// JSON on stdout instead of a table.
    pub(crate) json: bool,
    /// Paint status words (stdout is a terminal and `NO_COLOR` is not set).
    colour: bool,
    /// Show progress of long operations (stderr is a terminal and not `--json`).
    progress: bool,
}

impl Output {
    /// The output for this process's stdout and stderr.
    pub(crate) fn detect(json: bool) -> Self {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            json,
            colour: !json && !no_colour && std::io::stdout().is_terminal(),
            progress: std::io::stderr().is_terminal(),
        }
    }

    /// Print `value` as JSON, or else the table `table` makes of it.
    pub(crate) fn show(&self, value: &Value, table: impl FnOnce(&Value) -> Table) {
        if self.json {
            self.line(&serde_json::to_string_pretty(value).unwrap_or_default());
        } else {
            self.line(table(value).render(self.colour).trim_end());
        }
    }

    /// Print one line on stdout; a closed pipe (`| head`) ends the output quietly.
    pub(crate) fn line(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    }

    /// Print one JSON value on one line: how `tail` streams records to scripts.
    pub(crate) fn json_line(&self, value: &Value) {
        self.line(&value.to_string());
    }

    /// `text` painted by the tone of `word`, when colours are on.
    pub(crate) fn paint(&self, text: &str) -> String {
        match tone(text.trim()).filter(|_| self.colour) {
            Some(code) => format!("\x1b[{code}m{text}\x1b[0m"),
            None => text.to_owned(),
        }
    }

    /// Replace the progress line on a terminal's stderr; nothing elsewhere.
    pub(crate) fn progress(&self, text: &str) {
        if self.progress {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        }
    }

    /// Clear the progress line.
    pub(crate) fn progress_done(&self) {
        self.progress("");
    }
}

/// The ANSI colour of a status word: green for good, yellow for in between, red for bad.
fn tone(word: &str) -> Option<&'static str> {
    match word {
        "passing" | "completed" | "resolved" | "ok" | "waiting" => Some("32"),
        "warning" | "pending" | "delayed" | "active" | "warn" => Some("33"),
        "critical" | "failed" | "firing" | "error" | "dead" | "cancelled" => Some("31"),
        _ => None,
    }
}

/// An aligned table: a header row and rows of cells, two spaces between columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    empty: &'static str,
    note: Option<String>,
}

impl Table {
    /// A table with these column names; `empty` is printed instead when it has no row.
    pub(crate) fn new(headers: &[&'static str], empty: &'static str) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
            empty,
            note: None,
        }
    }

    /// A line printed under the table, after a blank one.
    pub(crate) fn note(&mut self, text: String) {
        self.note = Some(one_line(&text));
    }

    /// Two columns, `FIELD` and `VALUE`: one record shown whole.
    pub(crate) fn record() -> Self {
        Self::new(&["FIELD", "VALUE"], "")
    }

    /// Add a row; missing cells are blank, extra ones dropped.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        // A line break inside a cell would break the alignment of every row below it.
        self.rows
            .push(cells.into_iter().map(|c| one_line(&c)).collect());
    }

    /// The table as text, status words painted when `colour`.
    pub(crate) fn render(&self, colour: bool) -> String {
        let note = self
            .note
            .as_ref()
            .map(|note| format!("\n{note}\n"))
            .unwrap_or_default();
        if self.rows.is_empty() {
            return format!("{}\n{note}", self.empty);
        }
        let output = Output {
            json: false,
            colour,
            progress: false,
        };
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for (i, row) in std::iter::once(&header).chain(&self.rows).enumerate() {
            let last = row.len().saturating_sub(1);
            for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
                let pad = width.saturating_sub(cell.chars().count());
                let shown = if i == 0 && colour {
                    format!("\x1b[1m{cell}\x1b[0m")
                } else if i == 0 {
                    cell.clone()
                } else {
                    output.paint(cell)
                };
                text.push_str(&shown);
                if column < last {
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            // An empty last cell leaves the padding of the one before it.
            text.truncate(text.trim_end_matches(' ').len());
            text.push('\n');
        }
        text + &note
    }
}

/// A cell's text on one line.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

/// The text of a JSON field for a cell: strings bare, `null` and absent blank, lists
/// joined with commas, anything else as JSON.
pub(crate) fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Each top-level field of `value` as a `FIELD VALUE` row.
pub(crate) fn record_table(value: &Value) -> Table {
    let mut table = Table::record();
    if let Value::Object(fields) = value {
        for (name, field) in fields {
            table.row(vec![name.clone(), cell(field)]);
        }
    }
    table
}

/// How long ago an RFC 3339 time was, as `4s`, `3m`, `2h` or `5d`; blank when absent or
/// unreadable.
pub(crate) fn age(value: &Value) -> String {
    let Some(then) = value
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    else {
        return String::new();
    };
    let secs = (chrono::Utc::now() - then.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7_199 => format!("{}m", secs / 60),
        7_200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A share in 0..1 as a percentage with one decimal.
pub(crate) fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map(|share| format!("{:.1}%", share * 100.0))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_by_visible_width_and_colour_never_shifts_them() {
        let mut table = Table::new(&["ID", "STATUS"], "none");
        table.row(vec!["a".into(), "passing".into()]);
        table.row(vec!["long-id\nx".into(), "critical".into()]);
        let plain = table.render(false);
        assert_eq!(
            plain,
            "ID         STATUS\na          passing\nlong-id x  critical\n"
        );
        let coloured = table.render(true);
        assert!(coloured.contains("\x1b[32mpassing\x1b[0m"), "{coloured}");
        let stripped = coloured
            .replace("\x1b[32m", "")
            .replace("\x1b[31m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
        assert_eq!(Table::new(&["ID"], "no rows").render(true), "no rows\n");
        table.note("picked: a".into());
        assert!(table.render(false).ends_with("critical\n\npicked: a\n"));
    }

    #[test]
    fn cells_read_any_json_without_panicking() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!(["a", 1])), "a,1");
        assert_eq!(cell(&json!({"k": 1})), "{\"k\":1}");
        assert_eq!(age(&json!("not a time")), "");
        assert_eq!(age(&json!(12)), "");
        assert_eq!(percent(&json!(0.1234)), "12.3%");
        assert_eq!(percent(&json!("x")), "");
    }
}
