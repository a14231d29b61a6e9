//! The archive folder: naming rotated files, compressing them, listing them.

use super::{io, Stream};
use crate::Result;
use chrono::{DateTime, NaiveDateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// One rotated file in the archive folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// Where it is.
    pub path: PathBuf,
    /// Which current file it was.
    pub stream: Stream,
    /// When it was rotated (to the second).
    pub rotated_at: DateTime<Utc>,
    /// Tells apart files rotated within the same second (0, 1, …), in rotation order.
    pub sequence: u32,
    /// Whether it is gzipped already.
    pub compressed: bool,
}

/// A fresh `{name}-{stamp}-{n}.log` in `dir` for a file rotated at `now`.
pub(super) fn pending_path(dir: &Path, name: &str, now: DateTime<Utc>) -> PathBuf {
    let stamp = now.format(STAMP);
    let mut n = 0u32;
    loop {
        let base = format!("{name}-{stamp}-{n}.log");
        let path = dir.join(&base);
        if !path.exists() && !dir.join(format!("{base}.gz")).exists() {
            return path;
        }
        n += 1;
    }
}

/// Gzip every `.log` in `dir` into `.log.gz` (through a `.part` file, so a crash never
/// leaves a truncated archive under the final name) and remove the original.
pub(super) fn compress_pending(dir: &Path) -> Result<usize> {
    let mut done = 0;
    for archive in list(dir)?.into_iter().filter(|a| !a.compressed) {
        let gz = archive.path.with_extension("log.gz");
        let part = archive.path.with_extension("log.gz.part");
        let mut input = BufReader::new(File::open(&archive.path).map_err(io)?);
        let output = BufWriter::new(File::create(&part).map_err(io)?);
        let mut encoder = GzEncoder::new(output, Compression::fast());
        std::io::copy(&mut input, &mut encoder).map_err(io)?;
        encoder.finish().map_err(io)?.flush().map_err(io)?;
        std::fs::rename(&part, &gz).map_err(io)?;
        std::fs::remove_file(&archive.path).map_err(io)?;
        done += 1;
    }
    Ok(done)
}

/// The rotated files in `dir`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<ArchivedFile>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if let Some(archive) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| parse(n, &path))
        {
            found.push(archive);
        }
    }
    found.sort_by(|a, b| {
        a.rotated_at
            .cmp(&b.rotated_at)
            .then_with(|| a.sequence.cmp(&b.sequence))
            .then_with(|| a.path.cmp(&b.path))
    });
    Ok(found)
}

fn parse(name: &str, path: &Path) -> Option<ArchivedFile> {
    let (base, compressed) = match name.strip_suffix(".log.gz") {
        Some(base) => (base, true),
        None => (name.strip_suffix(".log")?, false),
    };
    let mut parts = base.splitn(3, '-');
    let stream = match parts.next()? {
        "app" => Stream::App,
        "audit" => Stream::Audit,
        _ => return None,
    };
    let rotated_at = NaiveDateTime::parse_from_str(parts.next()?, STAMP)
        .ok()?
        .and_utc();
    let sequence = parts.next()?.parse::<u32>().ok()?;
    Some(ArchivedFile {
        path: path.to_path_buf(),
        stream,
        rotated_at,
        sequence,
        compressed,
    })
}
