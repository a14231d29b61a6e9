//! The file sink on an injected clock: rotation by size and by day, gzip archives that
//! decompress to the original lines, retention that removes only what is past it.

use chrono::{TimeZone, Utc};
use flate2::read::GzDecoder;
use omc_orchestra::logs::file::Stream;
use omc_orchestra::logs::{
    FileSink, FileSinkOptions, IngestOptions, LogCategory, LogExport, LogIngest, LogLevel,
    LogQuery, LogRecord, LogSink, MemoryLogSink,
};
use omc_orchestra::ManualClock;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A fresh folder, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("orchestra-logs-{}", uuid::Uuid::new_v4()));
        Self(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn records(clock: &ManualClock, n: usize, tag: &str) -> Vec<LogRecord> {
    use omc_orchestra::Clock;
    (0..n)
        .map(|i| {
            LogRecord::new(
                clock.now(),
                LogLevel::Info,
                "pricing-service",
                format!("{tag} {i:04}"),
            )
            .with_field("stationId", serde_json::json!("STN001"))
        })
        .collect()
}

fn lines_of(records: &[LogRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        text
    } else {
        String::from_utf8(bytes).unwrap()
    };
    text.lines().map(str::to_owned).collect()
}

fn sink(folder: &Folder, clock: &ManualClock, max_bytes: u64) -> FileSink {
    let mut options = FileSinkOptions::new(&folder.0);
    options.max_bytes = max_bytes;
    options.retention = 7 * DAY;
    options.audit_retention = 30 * DAY;
    FileSink::open(options, Arc::new(clock.clone())).unwrap()
}

fn noon() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap())
}

#[tokio::test]
async fn rotates_by_size_into_gzip_archives_that_hold_every_line() {
    let folder = Folder::new();
    let clock = noon();
    let sink = sink(&folder, &clock, 1_000);
    let written = records(&clock, 40, "size");
    for chunk in written.chunks(7) {
        sink.export(chunk).await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    sink.compress_pending().unwrap();
    let archives = sink.archives().unwrap();
    assert!(archives.len() >= 5, "{archives:?}");
    let mut seen = Vec::new();
    for archive in &archives {
        assert!(
            archive.compressed && archive.stream == Stream::App,
            "{archive:?}"
        );
        assert!(
            !archive.path.with_extension("").exists(),
            "the plain file stays behind"
        );
        let lines = read_lines(&archive.path);
        let size: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(size <= 1_000, "an archive of {size} bytes");
        seen.extend(lines);
    }
    seen.extend(read_lines(&sink.current_path(Stream::App)));
    assert_eq!(seen, lines_of(&written));
}

#[tokio::test]
async fn rotates_when_the_day_changes() {
    let folder = Folder::new();
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 23, 59, 0).unwrap());
    let sink = sink(&folder, &clock, 1 << 30);
    let before = records(&clock, 3, "before midnight");
    sink.export(&before).await.unwrap();
    clock.advance(Duration::from_secs(30));
    let still = records(&clock, 2, "still the same day");
    sink.export(&still).await.unwrap();
    assert!(sink.archives().unwrap().is_empty());

    clock.advance(Duration::from_secs(60));
    let after = records(&clock, 2, "after midnight");
    sink.export(&after).await.unwrap();
    sink.compress_pending().unwrap();
    let archives = sink.archives().unwrap();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(
        archives[0].rotated_at,
        Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 30).unwrap()
    );
    let mut day_one = lines_of(&before);
    day_one.extend(lines_of(&still));
    assert_eq!(read_lines(&archives[0].path), day_one);
    assert_eq!(
        read_lines(&sink.current_path(Stream::App)),
        lines_of(&after)
    );
}

#[tokio::test]
async fn audit_records_have_their_own_file_and_retention() {
    let folder = Folder::new();
    let clock = noon();
    let sink = sink(&folder, &clock, 1 << 30);
    // One rotation of each file a day for ten days.
    for day in 0..10 {
        let mut batch = records(&clock, 2, &format!("day {day}"));
        batch[1].category = LogCategory::Audit;
        sink.export(&batch).await.unwrap();
        clock.advance(DAY);
    }
    sink.export(&records(&clock, 1, "today")).await.unwrap();
    let mut audit = records(&clock, 1, "today audit");
    audit[0].category = LogCategory::Audit;
    sink.export(&audit).await.unwrap();
    sink.compress_pending().unwrap();
    let count = |stream| {
        sink.archives()
            .unwrap()
            .iter()
            .filter(|a| a.stream == stream)
            .count()
    };
    assert_eq!((count(Stream::App), count(Stream::Audit)), (10, 10));
    let audit_lines = read_lines(&sink.current_path(Stream::Audit));
    assert_eq!(audit_lines, lines_of(&audit));

    // Now is day 10 at noon; archives were rotated on days 1..=10 at noon. A 7-day
    // retention keeps those rotated at or after day 3 noon: days 3..=10.
    let deleted = sink.cleanup().unwrap();
    assert_eq!(deleted, 2);
    assert_eq!((count(Stream::App), count(Stream::Audit)), (8, 10));
    // The day-3 archive is exactly at the boundary: kept now, gone a second later.
    clock.advance(Duration::from_secs(1));
    assert_eq!(sink.cleanup().unwrap(), 1);
    assert_eq!((count(Stream::App), count(Stream::Audit)), (7, 10));
    assert_eq!(sink.cleanup().unwrap(), 0);
    clock.advance(30 * DAY);
    sink.cleanup().unwrap();
    assert_eq!((count(Stream::App), count(Stream::Audit)), (0, 0));
}

#[tokio::test]
async fn the_hourly_cleanup_task_runs_cleanup() {
    let folder = Folder::new();
    let clock = noon();
    let sink = sink(&folder, &clock, 1 << 30);
    sink.export(&records(&clock, 1, "old")).await.unwrap();
    clock.advance(DAY);
    sink.export(&records(&clock, 1, "new")).await.unwrap();
    sink.compress_pending().unwrap();
    assert_eq!(sink.archives().unwrap().len(), 1);
    clock.advance(8 * DAY);
    let task = sink.spawn_cleanup(Duration::from_millis(20));
    omc_orchestra::testkit::eventually("the archive deleted", Duration::from_secs(5), || {
        let empty = sink.archives().unwrap().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn ingest_writes_the_store_and_the_file() {
    let folder = Folder::new();
    let clock = noon();
    let file = sink(&folder, &clock, 1 << 30);
    let store = Arc::new(MemoryLogSink::new());
    let ingest = LogIngest::new(
        store.clone(),
        vec![Arc::new(file.clone())],
        IngestOptions::default(),
    );
    let batch = records(&clock, 5, "both");
    ingest.submit(batch.clone()).await.unwrap();
    assert_eq!(store.search(&LogQuery::default()).await.unwrap().len(), 5);
    assert_eq!(
        read_lines(&file.current_path(Stream::App)),
        lines_of(&batch)
    );
    assert_eq!(ingest.export_failures(), 0);
}

#[tokio::test]
async fn a_retention_longer_than_the_calendar_deletes_nothing() {
    let folder = Folder::new();
    let clock = noon();
    let mut options = FileSinkOptions::new(&folder.0);
    options.max_bytes = 1_000;
    options.retention = Duration::MAX;
    options.audit_retention = Duration::MAX;
    let sink = FileSink::open(options, Arc::new(clock.clone())).unwrap();
    for chunk in records(&clock, 40, "kept").chunks(7) {
        sink.export(chunk).await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let archives = sink.archives().unwrap().len();
    assert!(archives >= 2, "{archives} archives");
    // Years later, nothing has outlived a retention no calendar reaches the end of.
    clock.advance(Duration::from_secs(20 * 365 * 86_400));
    assert_eq!(sink.cleanup().unwrap(), 0);
    assert_eq!(sink.archives().unwrap().len(), archives);
}
