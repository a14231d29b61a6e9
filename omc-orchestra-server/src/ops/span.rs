//! Spans of time written the way operators type them: `90s`, `15m`, `12h`, `30d`.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// `90s`, `15m`, `12h`, `30d` or plain seconds; zero is allowed, callers bound it.
pub(crate) fn parse_span(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30d, 12h or 15m"))?;
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}`: use s, m, h or d")),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// The time a span back from now, at most ten years, for `--since`.
pub(crate) fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    let span = parse_span(text)?;
    if span.as_secs() > 10 * 365 * 86_400 {
        return Err("--since reaches back at most 10 years".into());
    }
    chrono::Duration::from_std(span)
        .ok()
        .and_then(|span| Utc::now().checked_sub_signed(span))
        .ok_or_else(|| format!("`{text}` reaches too far back"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_with_units_and_never_overflow() {
        assert_eq!(parse_span("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_span(" 2h "), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_span("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "m",
            "1w",
            "-1h",
            "99999999999999999999d",
            "184467440737095516d",
        ] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
        assert!(parse_since("20000d").is_err());
        let hour_ago = parse_since("1h").unwrap();
        assert!((Utc::now() - hour_ago).num_seconds().abs_diff(3600) < 60);
    }
}
