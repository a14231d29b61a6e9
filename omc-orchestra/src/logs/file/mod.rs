//! The file sink: JSON lines on disk, rotated by size and by day, rotated files gzipped
//! into an archive folder, archives deleted past their retention.
//!
//! Layout under the sink's folder:
//!
//! | path | holds |
//! | --- | --- |
//! | `app.log` | every record but audit ones, one JSON object a line |
//! | `audit.log` | audit records (category `audit`), with their own, longer retention |
//! | `archive/{app,audit}-{YYYYMMDDTHHMMSSZ}-{n}.log.gz` | rotated files, named by the time they were rotated |
//!
//! Time comes from the injected clock: the current file is rotated when the clock's day
//! is no longer the day it was opened, or before a line would push it past
//! [`FileSinkOptions::max_bytes`]. Rotation renames the file into the archive folder
//! (fast, under the write lock) and compresses it afterwards, off the write path.

mod archive;

use super::{LogCategory, LogExport, LogRecord};
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use chrono::NaiveDate;
use parking_lot::Mutex;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use archive::ArchivedFile;

/// Where and how the file sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSinkOptions {
    /// The folder of the current files; archives go to its `archive/` subfolder.
    pub dir: PathBuf,
    /// Largest size of a current file before it is rotated, in bytes.
    pub max_bytes: u64,
    /// How long archives of ordinary records are kept.
    pub retention: Duration,
    /// How long archives of audit records are kept (never less than `retention`).
    pub audit_retention: Duration,
}

impl FileSinkOptions {
    /// 100 MiB files, archives kept 14 days, audit archives 365 days, under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: 100 * 1024 * 1024,
            retention: Duration::from_secs(14 * 24 * 3600),
            audit_retention: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Which of the two current files a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `app.log`.
    App,
    /// `audit.log`.
    Audit,
}

impl Stream {
    /// The file's base name (`app`, `audit`).
    pub fn name(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Audit => "audit",
        }
    }
}

struct Current {
    stream: Stream,
    writer: Option<BufWriter<File>>,
    size: u64,
    day: NaiveDate,
}

struct Inner {
    options: FileSinkOptions,
    clock: SharedClock,
    app: Mutex<Current>,
    audit: Mutex<Current>,
    compressing: Mutex<()>,
}

/// JSON-lines files with rotation, gzip archives and retention. Cheap to clone.
#[derive(Clone)]
pub struct FileSink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

fn io(err: std::io::Error) -> Error {
    Error::backend(err)
}

impl FileSink {
    /// A sink writing under `options.dir` (created if missing), on `clock`.
    pub fn open(options: FileSinkOptions, clock: SharedClock) -> Result<Self> {
        if options.max_bytes == 0 {
            return Err(Error::invalid("maxBytes", "must be positive"));
        }
        std::fs::create_dir_all(options.dir.join("archive")).map_err(io)?;
        let today = clock.now().date_naive();
        let current = |stream| Current {
            stream,
            writer: None,
            size: 0,
            day: today,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                app: Mutex::new(current(Stream::App)),
                audit: Mutex::new(current(Stream::Audit)),
                compressing: Mutex::new(()),
                options,
                clock,
            }),
        })
    }

    /// The options the sink runs with.
    pub fn options(&self) -> &FileSinkOptions {
        &self.inner.options
    }

    /// The path of the current file of `stream`.
    pub fn current_path(&self, stream: Stream) -> PathBuf {
        self.inner
            .options
            .dir
            .join(format!("{}.log", stream.name()))
    }

    /// The archive folder.
    pub fn archive_dir(&self) -> PathBuf {
        self.inner.options.dir.join("archive")
    }

    /// Append `records` (blocking I/O; [`LogExport::export`] runs it off the async
    /// threads). Returns once the lines are handed to the operating system.
    pub fn append(&self, records: &[LogRecord]) -> Result<()> {
        let (app, audit) = Lines::split(records)?;
        self.append_lines(Stream::App, &app)?;
        self.append_lines(Stream::Audit, &audit)
    }

    fn append_lines(&self, stream: Stream, lines: &Lines) -> Result<()> {
        if lines.ends.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let slot = match stream {
            Stream::App => &inner.app,
            Stream::Audit => &inner.audit,
        };
        let mut rotated = false;
        let mut current = slot.lock();
        let today = inner.clock.now().date_naive();
        let mut start = 0;
        for &end in &lines.ends {
            let line = &lines.bytes[start..end];
            start = end;
            if current.writer.is_none() {
                self.open_current(&mut current, today)?;
            }
            let due = current.size > 0
                && (current.day != today
                    || current.size + line.len() as u64 > inner.options.max_bytes);
            if due {
                self.rotate(&mut current)?;
                self.open_current(&mut current, today)?;
                rotated = true;
            }
            if let Some(writer) = current.writer.as_mut() {
                writer.write_all(line).map_err(io)?;
            }
            current.size += line.len() as u64;
        }
        if let Some(writer) = current.writer.as_mut() {
            writer.flush().map_err(io)?;
        }
        drop(current);
        if rotated {
            self.compress_in_background();
        }
        Ok(())
    }

    fn open_current(&self, current: &mut Current, today: NaiveDate) -> Result<()> {
        let path = self.current_path(current.stream);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        current.writer = Some(BufWriter::with_capacity(256 * 1024, file));
        if size == 0 {
            current.day = today;
        }
        current.size = size;
        Ok(())
    }

    fn rotate(&self, current: &mut Current) -> Result<()> {
        if let Some(mut writer) = current.writer.take() {
            writer.flush().map_err(io)?;
        }
        let from = self.current_path(current.stream);
        let to = archive::pending_path(
            &self.archive_dir(),
            current.stream.name(),
            self.inner.clock.now(),
        );
        std::fs::rename(&from, &to).map_err(io)?;
        current.size = 0;
        Ok(())
    }

    fn compress_in_background(&self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let sink = self.clone();
            runtime.spawn_blocking(move || {
                if let Err(err) = sink.compress_pending() {
                    tracing::warn!(error = %err, "compressing rotated log files failed");
                }
            });
        }
    }

    /// Gzip every rotated file not compressed yet; answers how many it compressed.
    pub fn compress_pending(&self) -> Result<usize> {
        let _one_at_a_time = self.inner.compressing.lock();
        archive::compress_pending(&self.archive_dir())
    }

    /// The archives, oldest first.
    pub fn archives(&self) -> Result<Vec<ArchivedFile>> {
        archive::list(&self.archive_dir())
    }

    /// Delete the archives past their retention (audit ones past the audit retention);
    /// answers how many it deleted.
    pub fn cleanup(&self) -> Result<usize> {
        let options = &self.inner.options;
        let now = self.inner.clock.now();
        let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let mut deleted = 0;
        for archive in self.archives()? {
            let keep = if archive.stream == Stream::Audit {
                options.audit_retention.max(options.retention)
            } else {
                options.retention
            };
            // A retention longer than the calendar reaches back deletes nothing.
            let expired = now
                .checked_sub_signed(age(keep))
                .is_some_and(|cutoff| archive.rotated_at < cutoff);
            if expired {
                std::fs::remove_file(&archive.path).map_err(io)?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Run [`FileSink::cleanup`] every `every` (hourly in production) until aborted.
    pub fn spawn_cleanup(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let sink = sink.clone();
                match tokio::task::spawn_blocking(move || sink.cleanup()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(deleted = n, "deleted expired log archives"),
                    Ok(Err(err)) => tracing::warn!(error = %err, "log archive cleanup failed"),
                    Err(err) => tracing::warn!(error = %err, "log archive cleanup panicked"),
                }
            }
        })
    }

    /// Where the sink writes.
    pub fn dir(&self) -> &Path {
        &self.inner.options.dir
    }
}

/// Serialized lines of one stream: one buffer, and where each line ends.
#[derive(Default)]
struct Lines {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Lines {
    /// The lines of ordinary and of audit records.
    fn split(records: &[LogRecord]) -> Result<(Lines, Lines)> {
        let mut app = Lines::default();
        let mut audit = Lines::default();
        for record in records {
            let lines = if record.category == LogCategory::Audit {
                &mut audit
            } else {
                &mut app
            };
            serde_json::to_writer(&mut lines.bytes, record)?;
            lines.bytes.push(b'\n');
            lines.ends.push(lines.bytes.len());
        }
        Ok((app, audit))
    }
}

#[async_trait]
impl LogExport for FileSink {
    async fn export(&self, records: &[LogRecord]) -> Result<()> {
        let (app, audit) = Lines::split(records)?;
        let sink = self.clone();
        tokio::task::spawn_blocking(move || {
            sink.append_lines(Stream::App, &app)?;
            sink.append_lines(Stream::Audit, &audit)
        })
        .await
        .map_err(Error::backend)?
    }
}
