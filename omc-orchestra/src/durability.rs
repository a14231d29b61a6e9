//! Durability levels: what "acknowledged" promises for an enqueued job, a published event
//! or a written log batch, and whether the Redis in use can keep that promise.
//!
//! | level | acknowledged once | a Redis crash (kill -9, power loss) loses |
//! | --- | --- | --- |
//! | `memory` | Redis has it in memory | everything since the last save (all of it when Redis keeps nothing on disk) |
//! | `aof` | it is in Redis's append-only file on disk | nothing acknowledged |
//! | `replica` | a replica has it in memory | nothing acknowledged, unless the replica dies with the primary |
//! | `aof+replica` | both | nothing acknowledged |
//!
//! `aof` is `WAITAOF 1 0` after each write batch on Redis 7.2 or newer; an older Redis has
//! no such command, so there it requires `appendonly yes` with `appendfsync always` (Redis
//! then writes and syncs the file before it answers) and refuses anything less.
//! `replica` is `WAIT 1 <timeout>` after each write batch. Either is sent in one pipeline
//! with the write, so it waits for that write whatever else shares the connection.

use crate::{Error, Result};
use serde::Serialize;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What an acknowledged write survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledged once Redis has it in memory.
    #[default]
    Memory,
    /// Acknowledged once it is in Redis's append-only file on disk.
    Aof,
    /// Acknowledged once a replica has it.
    Replica,
    /// Acknowledged once it is on disk and a replica has it.
    #[serde(rename = "aof+replica")]
    AofReplica,
}

impl Durability {
    /// Every level, weakest first.
    pub const ALL: [Durability; 4] = [
        Durability::Memory,
        Durability::Aof,
        Durability::Replica,
        Durability::AofReplica,
    ];

    /// The level's name, as the option takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Memory => "memory",
            Durability::Aof => "aof",
            Durability::Replica => "replica",
            Durability::AofReplica => "aof+replica",
        }
    }

    /// Whether a write waits for Redis's append-only file.
    pub fn on_disk(self) -> bool {
        matches!(self, Durability::Aof | Durability::AofReplica)
    }

    /// Whether a write waits for a replica.
    pub fn on_replica(self) -> bool {
        matches!(self, Durability::Replica | Durability::AofReplica)
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Durability {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Durability::Memory),
            "aof" => Ok(Durability::Aof),
            "replica" => Ok(Durability::Replica),
            "aof+replica" | "replica+aof" | "aof,replica" => Ok(Durability::AofReplica),
            _ => Err(Error::invalid(
                "durability",
                "must be memory, aof, replica or aof+replica",
            )),
        }
    }
}

/// How long a write waits for a replica (or, on Redis 7.2+, for the disk) before the
/// caller is told it is not confirmed; well inside the servers' five-second deadline.
pub const DEFAULT_CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);

/// What a Redis server keeps, read from `INFO` and `CONFIG GET` at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// How orchestra reaches Redis: `single`, `sentinel` or `cluster` (for a cluster,
    /// every other field is the weakest of its masters').
    pub topology: String,
    /// `redis_version`.
    pub version: String,
    /// Whether the append-only file is on (`aof_enabled`).
    pub aof: bool,
    /// `appendfsync`, when `CONFIG GET` is allowed.
    pub appendfsync: Option<String>,
    /// Whether RDB snapshots are configured (`save` not empty), when `CONFIG GET` is
    /// allowed.
    pub snapshots: Option<bool>,
    /// Replicas connected now (`connected_slaves`).
    pub replicas: u32,
}

impl Persistence {
    /// Whether the server has `WAITAOF` (Redis 7.2 or newer).
    pub fn has_waitaof(&self) -> bool {
        let mut parts = self
            .version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let major = parts.next().unwrap_or(0);
        let minor = parts.next().unwrap_or(0);
        (major, minor) >= (7, 2)
    }

    /// What two nodes keep together, each setting the weaker of the two: a Cluster keeps
    /// a write only as well as the master that holds it.
    pub fn least(self, other: Persistence) -> Persistence {
        let rank = |fsync: &Option<String>| match fsync.as_deref() {
            Some("always") => 3,
            Some("everysec") => 2,
            Some(_) => 1,
            None => 0,
        };
        let version = if self.has_waitaof() {
            other.version
        } else {
            self.version
        };
        Persistence {
            topology: self.topology,
            version,
            aof: self.aof && other.aof,
            appendfsync: if rank(&self.appendfsync) <= rank(&other.appendfsync) {
                self.appendfsync
            } else {
                other.appendfsync
            },
            snapshots: match (self.snapshots, other.snapshots) {
                (Some(a), Some(b)) => Some(a && b),
                _ => None,
            },
            replicas: self.replicas.min(other.replicas),
        }
    }
}

/// The level in force and whether Redis's settings meet it, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DurabilityReport {
    /// The level chosen.
    pub level: Durability,
    /// Which store: `memory` or `redis`.
    pub backend: &'static str,
    /// Whether the settings read meet the level.
    pub met: bool,
    /// What a crash or restart loses, in a sentence.
    pub risk: String,
    /// What Redis said of its persistence (absent for the memory backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<Persistence>,
}

impl DurabilityReport {
    /// The memory backend: nothing is kept across a restart, whatever the level.
    pub fn memory() -> Self {
        Self {
            level: Durability::Memory,
            backend: "memory",
            met: true,
            risk: "in-memory stores: a restart of the server loses every job, event and log \
                   record"
                .into(),
            redis: None,
        }
    }

    /// One line saying what a crash loses: a WARN when the level is not met or Redis keeps
    /// nothing on disk, else INFO.
    pub fn log(&self) {
        let on_disk = self
            .redis
            .as_ref()
            .is_some_and(|p| p.aof || p.snapshots == Some(true));
        let level = self.level.as_str();
        let topology = self
            .redis
            .as_ref()
            .map_or("memory", |p| p.topology.as_str());
        if !self.met || (self.backend == "redis" && !on_disk) {
            tracing::warn!(durability = level, topology, risk = %self.risk, "durability");
        } else {
            tracing::info!(durability = level, topology, risk = %self.risk, "durability");
        }
    }

    /// How `persistence` meets `level`: `Err` when the server must not start (an `aof`
    /// promise that this Redis cannot keep), else the report, with `met` false and the
    /// risk named when the level holds only in part.
    pub fn assess(level: Durability, persistence: Persistence) -> Result<Self> {
        let p = &persistence;
        let on_disk = p.aof && p.appendfsync.as_deref() == Some("always");
        if level.on_disk() && !p.aof {
            return Err(Error::invalid(
                "durability",
                format!(
                    "`{level}` needs Redis's append-only file, and this Redis has \
                     `appendonly no`: set `appendonly yes` (and `appendfsync always` before \
                     Redis 7.2), or choose `--durability memory`"
                ),
            ));
        }
        if level.on_disk() && !p.has_waitaof() {
            match p.appendfsync.as_deref() {
                Some("always") => {}
                Some(other) => {
                    return Err(Error::invalid(
                        "durability",
                        format!(
                            "`{level}` on Redis {} (no WAITAOF before 7.2) needs \
                             `appendfsync always`, and this Redis has `appendfsync {other}`",
                            p.version
                        ),
                    ))
                }
                None => {
                    return Err(Error::invalid(
                        "durability",
                        format!(
                            "`{level}` on Redis {} (no WAITAOF before 7.2) needs \
                             `appendfsync always`, and `CONFIG GET appendfsync` is not allowed \
                             here, so it cannot be checked",
                            p.version
                        ),
                    ))
                }
            }
        }
        let (met, risk) = match level {
            Durability::Memory if on_disk => (
                true,
                "Redis syncs every write to its append-only file, so a crash loses nothing; \
                 `--durability aof` would promise it"
                    .to_owned(),
            ),
            Durability::Memory if p.aof => (
                true,
                format!(
                    "a Redis crash loses up to about a second of acknowledged writes \
                     (`appendfsync {}`)",
                    p.appendfsync.as_deref().unwrap_or("unknown")
                ),
            ),
            Durability::Memory if p.snapshots == Some(true) => (
                true,
                "a Redis crash loses every acknowledged write since its last RDB snapshot"
                    .to_owned(),
            ),
            Durability::Memory => (
                true,
                "Redis keeps nothing on disk: a Redis restart loses every acknowledged job, \
                 event and log record"
                    .to_owned(),
            ),
            Durability::Aof => (true, "a Redis crash loses nothing acknowledged".to_owned()),
            Durability::Replica | Durability::AofReplica if p.replicas == 0 => (
                false,
                "no replica is connected: every write waits for one and is refused (503) \
                 until one is"
                    .to_owned(),
            ),
            Durability::Replica => (
                true,
                "a crash of the primary loses nothing acknowledged, unless its replicas \
                 die with it"
                    .to_owned(),
            ),
            Durability::AofReplica => (true, "a crash loses nothing acknowledged".to_owned()),
        };
        Ok(Self {
            level,
            backend: "redis",
            met,
            risk,
            redis: Some(persistence),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(version: &str, aof: bool, fsync: Option<&str>, replicas: u32) -> Persistence {
        Persistence {
            topology: "single".into(),
            version: version.into(),
            aof,
            appendfsync: fsync.map(str::to_owned),
            snapshots: Some(false),
            replicas,
        }
    }

    #[test]
    fn levels_round_trip_by_name() {
        for level in Durability::ALL {
            assert_eq!(level.as_str().parse::<Durability>().unwrap(), level);
        }
        let err = "disk".parse::<Durability>().unwrap_err().to_string();
        assert!(err.contains("durability"), "{err}");
    }

    #[test]
    fn aof_before_7_2_needs_appendfsync_always() {
        let ok =
            DurabilityReport::assess(Durability::Aof, redis("7.0.15", true, Some("always"), 0));
        assert!(ok.unwrap().met);
        let everysec = redis("7.0.15", true, Some("everysec"), 0);
        let err = DurabilityReport::assess(Durability::Aof, everysec).unwrap_err();
        assert!(err.to_string().contains("appendfsync everysec"), "{err}");
        let hidden = DurabilityReport::assess(Durability::Aof, redis("7.0.15", true, None, 0));
        assert!(hidden.unwrap_err().to_string().contains("CONFIG GET"));
    }

    #[test]
    fn aof_from_7_2_takes_everysec_and_never_appendonly_no() {
        let everysec = redis("7.2.4", true, Some("everysec"), 0);
        assert!(DurabilityReport::assess(Durability::Aof, everysec).is_ok());
        let off = DurabilityReport::assess(Durability::Aof, redis("7.4.0", false, None, 0));
        assert!(off.unwrap_err().to_string().contains("appendonly no"));
    }

    #[test]
    fn replica_without_one_is_not_met_and_memory_names_the_loss() {
        let lone = DurabilityReport::assess(Durability::Replica, redis("7.0.15", false, None, 0));
        let lone = lone.unwrap();
        assert!(!lone.met && lone.risk.contains("no replica"), "{lone:?}");
        let bare = DurabilityReport::assess(Durability::Memory, redis("7.0.15", false, None, 0));
        assert!(bare.unwrap().risk.contains("keeps nothing on disk"));
    }
}
