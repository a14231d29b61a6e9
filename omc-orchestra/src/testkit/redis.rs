//! A real Redis for tests: the shared one, or one of the test's own.
//!
//! [`url`] answers `ORCHESTRA_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`). When no
//! Redis answers there it starts `redis-server` on a free port, and when that binary is
//! missing it panics naming `scripts/test`, which installs it: no Redis test is skipped.
//! [`store`] gives each test its own key prefix; tests delete only their own prefix.

use crate::RedisStore;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The Redis tests use when nothing says otherwise.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

static URL: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
static FALLBACK: OnceLock<RedisProcess> = OnceLock::new();

/// The URL of a Redis that answers `PING`.
pub async fn url() -> String {
    URL.get_or_init(|| async {
        let wanted =
            std::env::var("ORCHESTRA_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
        if ping(&wanted).await {
            return wanted;
        }
        let process = RedisProcess::start(false).unwrap_or_else(|err| {
            panic!(
                "no Redis answers at {wanted} and `redis-server` could not be started ({err}). \
                 `scripts/test` installs it; or start one (`apt-get install redis-server && \
                 redis-server --daemonize yes`) or point ORCHESTRA_TEST_REDIS_URL at one."
            )
        });
        let url = process.url();
        let _ = FALLBACK.set(process);
        url
    })
    .await
    .clone()
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let connect = client.get_multiplexed_async_connection();
    match tokio::time::timeout(Duration::from_secs(2), connect).await {
        Ok(Ok(mut conn)) => redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok(),
        _ => false,
    }
}

/// A store on the test Redis under a fresh prefix of its own.
pub async fn store() -> RedisStore {
    store_at(&url().await).await
}

/// A store on the Redis at `url` (any topology) under a fresh prefix of its own.
pub async fn store_at(url: &str) -> RedisStore {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    RedisStore::connect(url, &prefix)
        .await
        .unwrap_or_else(|err| {
            let url = crate::redact::redact(url);
            panic!("cannot connect to the test Redis at {url}: {err}")
        })
}

/// `n` job queues on `n` connections of their own to the Redis at `url`, under `prefix`, on
/// `clock`: what `n` replicas of a server see, for the once-only checks (cron ticks).
pub async fn queues_on(
    url: &str,
    prefix: &str,
    clock: &crate::ManualClock,
    n: usize,
) -> Vec<std::sync::Arc<dyn crate::jobs::JobStore>> {
    let mut queues: Vec<std::sync::Arc<dyn crate::jobs::JobStore>> = Vec::with_capacity(n);
    for _ in 0..n {
        let own = RedisStore::connect(url, prefix)
            .await
            .expect("a connection of its own");
        let queue = crate::jobs::RedisJobQueue::new(
            own,
            "default",
            std::sync::Arc::new(clock.clone()),
            crate::jobs::QueueOptions::default(),
        )
        .expect("a queue");
        queues.push(std::sync::Arc::new(queue));
    }
    queues
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|err| panic!("no free port: {err}"))
}

/// A `redis-server` of the test's own, for fault tests (restarts, AOF durability); it is
/// killed when dropped and never touches the shared Redis.
#[derive(Debug)]
pub struct RedisProcess {
    port: u16,
    dir: PathBuf,
    aof: bool,
    /// `appendfsync` when `aof`.
    fsync: &'static str,
    /// Further `redis-server` options (`--replicaof …`).
    extra: Vec<String>,
    child: std::sync::Mutex<Option<Child>>,
}

impl RedisProcess {
    /// Start `redis-server` on a free port, with an append-only file synced on every
    /// write when `aof`.
    pub fn start(aof: bool) -> std::io::Result<Self> {
        Self::start_with(aof, "always", Vec::new())
    }

    /// Start `redis-server` on a free port with an append-only file synced as
    /// `appendfsync` says (`always`, `everysec` or `no`).
    pub fn start_fsync(appendfsync: &'static str) -> std::io::Result<Self> {
        Self::start_with(true, appendfsync, Vec::new())
    }

    /// Start a replica of `primary` (no append-only file of its own).
    pub fn start_replica_of(primary: &RedisProcess) -> std::io::Result<Self> {
        let of = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            primary.port.to_string(),
        ];
        Self::start_with(false, "always", of)
    }

    /// Start `redis-server` on `port` with further options (`--cluster-enabled yes`…),
    /// no append-only file.
    pub fn start_on(port: u16, extra: Vec<String>) -> std::io::Result<Self> {
        Self::start_at(port, false, "always", extra)
    }

    fn start_with(aof: bool, fsync: &'static str, extra: Vec<String>) -> std::io::Result<Self> {
        Self::start_at(free_port(), aof, fsync, extra)
    }

    fn start_at(
        port: u16,
        aof: bool,
        fsync: &'static str,
        extra: Vec<String>,
    ) -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("orchestra-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let process = Self {
            port,
            dir,
            aof,
            fsync,
            extra,
            child: std::sync::Mutex::new(None),
        };
        process.launch(&[])?;
        Ok(process)
    }

    fn launch(&self, more: &[String]) -> std::io::Result<()> {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if self.aof { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg(self.fsync)
            .args(&self.extra)
            .args(more)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        if let Ok(mut slot) = self.child.lock() {
            *slot = Some(child);
        }
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(std::io::Error::other(format!(
            "redis-server did not listen on port {} within 5 s",
            self.port
        )))
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The folder the server runs in (its config and data files).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL): whatever it had not written is gone.
    pub fn kill(&self) {
        if let Ok(mut slot) = self.child.lock() {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Whether the server was killed and not started again.
    pub fn is_killed(&self) -> bool {
        self.child
            .lock()
            .map(|slot| slot.is_none())
            .unwrap_or(false)
    }

    /// Stop the server without killing it (`SIGSTOP`): connections stay open and nothing
    /// answers, as when Redis stalls; [`RedisProcess::resume`] lets it go on.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Let a paused server go on (`SIGCONT`).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .lock()
            .ok()
            .and_then(|slot| slot.as_ref().map(Child::id));
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status();
        }
    }

    /// Kill the server and start it again on the same port and folder.
    pub fn restart(&self) -> std::io::Result<()> {
        self.kill();
        self.start_again()
    }

    /// Start a killed server again on the same port and folder.
    pub fn start_again(&self) -> std::io::Result<()> {
        self.launch(&[])
    }

    /// [`RedisProcess::start_again`] with options added to the ones it started with (the
    /// later of two equal options wins).
    pub fn start_again_with(&self, more: &[String]) -> std::io::Result<()> {
        self.launch(more)
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
