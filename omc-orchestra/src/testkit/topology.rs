//! Redis Cluster and Sentinel groups of a test's own, on free ports, torn down when
//! dropped: `redis-server --cluster-enabled yes` with `redis-cli --cluster create`, and a
//! master, a replica and three Sentinels. They never touch the shared Redis.

use super::redis::RedisProcess;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free port `p` whose cluster bus port `p + 10000` is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = 20000 + (rand_u16() % 20000);
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10000) {
            return port;
        }
    }
    panic!("no free port pair for a cluster node");
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}

fn redis_cli(args: &[String]) -> std::io::Result<String> {
    let out = Command::new("redis-cli").args(args).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "redis-cli {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The password of each node and Sentinel started with one, by port, for `ask`.
static PASSWORDS: std::sync::Mutex<Vec<(u16, String)>> = std::sync::Mutex::new(Vec::new());

fn remember_password(port: u16, password: Option<&str>) {
    if let (Some(password), Ok(mut known)) = (password, PASSWORDS.lock()) {
        known.push((port, password.to_owned()));
    }
}

fn ask(port: u16, command: &[&str]) -> String {
    let mut args = vec!["-p".to_owned(), port.to_string()];
    let password = PASSWORDS.lock().ok().and_then(|known| {
        known
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, password)| password.clone())
    });
    if let Some(password) = password {
        args.extend(["-a".to_owned(), password, "--no-auth-warning".to_owned()]);
    }
    args.extend(command.iter().map(|s| (*s).to_owned()));
    redis_cli(&args).unwrap_or_default()
}

fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} not within {within:?}");
}

/// A Redis Cluster of three masters with a replica each.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
    password: Option<String>,
}

impl RedisCluster {
    /// Start six nodes, join them as three masters and three replicas, and wait until
    /// every node says the cluster is ok. Panics with what went wrong (`redis-server` or
    /// `redis-cli` missing, a node that does not start): no test is skipped.
    pub fn start() -> Self {
        Self::start_with_password(None)
    }

    /// [`RedisCluster::start`], every node requiring `password` (for the default user,
    /// and between masters and replicas).
    pub fn start_with_password(password: Option<&str>) -> Self {
        let nodes: Vec<RedisProcess> = (0..6)
            .map(|_| {
                let port = free_cluster_port();
                let conf = format!("nodes-{port}.conf");
                remember_password(port, password);
                RedisProcess::start_on(
                    port,
                    [
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-config-file".into(),
                        conf,
                        "--cluster-node-timeout".into(),
                        "1000".into(),
                        // A replica takes over at once, whatever its replication lag.
                        "--cluster-replica-validity-factor".into(),
                        "0".into(),
                    ]
                    .into_iter()
                    .chain(auth_options(password))
                    .collect(),
                )
                .unwrap_or_else(|err| {
                    panic!("cannot start a cluster node: {err} (`scripts/test` installs it)")
                })
            })
            .collect();
        let mut create = match password {
            Some(password) => vec![
                "-a".to_owned(),
                password.to_owned(),
                "--no-auth-warning".to_owned(),
            ],
            None => Vec::new(),
        };
        create.extend(["--cluster".to_owned(), "create".to_owned()]);
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        if let Err(err) = redis_cli(&create) {
            panic!("redis-cli --cluster create failed: {err} (`scripts/test` installs it)");
        }
        let cluster = Self {
            nodes,
            password: password.map(str::to_owned),
        };
        cluster.wait_ok();
        cluster
    }

    fn wait_ok(&self) {
        wait_until(
            "the cluster ok on every node",
            Duration::from_secs(30),
            || {
                self.live()
                    .all(|n| ask(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                    && self.masters().len() == 3
            },
        );
    }

    fn live(&self) -> impl Iterator<Item = &RedisProcess> {
        self.nodes
            .iter()
            .filter(|n| ask(n.port(), &["PING"]).trim() == "PONG")
    }

    /// `redis+cluster://` naming every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let userinfo = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        format!("redis+cluster://{userinfo}{}", hosts.join(","))
    }

    /// The ports of the live masters that serve slots.
    pub fn masters(&self) -> Vec<u16> {
        self.live()
            .filter(|n| {
                let role = ask(n.port(), &["ROLE"]);
                role.lines().next() == Some("master")
            })
            .map(RedisProcess::port)
            .collect()
    }

    /// Kill -9 the master that holds `key`'s slot and wait until its replica took over
    /// and the cluster is ok again; returns the killed port.
    pub fn kill_master_of(&self, key: &str) -> u16 {
        let slot = ask(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key]);
        let slot: u16 = slot.trim().parse().unwrap_or(0);
        let owner = self
            .nodes
            .iter()
            .find(|n| {
                let role = ask(n.port(), &["ROLE"]);
                role.lines().next() == Some("master") && owns(n.port(), slot)
            })
            .unwrap_or_else(|| panic!("no master owns slot {slot}"));
        owner.kill();
        let killed = owner.port();
        wait_until(
            "a replica promoted after the master was killed",
            Duration::from_secs(30),
            || {
                self.live()
                    .all(|n| ask(n.port(), &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                    && self.masters().len() == 3
            },
        );
        killed
    }
}

impl RedisCluster {
    /// Start every killed node again: each rejoins as the replica of the node that took
    /// over; returns once every master has a replica in sync again.
    pub fn restart_killed(&self) {
        // An empty node may not take over before it has synced, for the reason given at
        // `SentinelGroup::restart_killed`.
        let no_failover = ["--cluster-replica-no-failover".to_owned(), "yes".to_owned()];
        let restarted: Vec<&RedisProcess> = self.nodes.iter().filter(|n| n.is_killed()).collect();
        for node in &restarted {
            node.start_again_with(&no_failover)
                .unwrap_or_else(|err| panic!("cannot start a cluster node again: {err}"));
        }
        for node in restarted {
            wait_until(
                "the restarted node is a replica in sync",
                Duration::from_secs(30),
                || in_sync(node.port()),
            );
            ask(
                node.port(),
                &["CONFIG", "SET", "cluster-replica-no-failover", "no"],
            );
        }
        wait_until(
            "every master has a replica in sync",
            Duration::from_secs(30),
            || {
                let masters = self.masters();
                masters.len() == 3
                    && masters.iter().all(|m| has_replica(*m))
                    && self.live().count() == self.nodes.len()
            },
        );
    }
}

impl RedisCluster {
    /// One hash tag per master (`q0`, `q1`, … as they fall): names whose keys spread over
    /// every shard, for loads meant to use all of them.
    pub fn tag_per_master(&self) -> Vec<String> {
        let masters = self.masters();
        let mut tags: Vec<(u16, String)> = Vec::new();
        for n in 0..1000 {
            let tag = format!("q{n}");
            let slot = ask(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", &tag]);
            let slot: u16 = slot.trim().parse().unwrap_or(0);
            if let Some(master) = masters.iter().find(|m| owns(**m, slot)) {
                if !tags.iter().any(|(m, _)| m == master) {
                    tags.push((*master, tag));
                }
            }
            if tags.len() == masters.len() {
                break;
            }
        }
        tags.into_iter().map(|(_, tag)| tag).collect()
    }
}

/// `--requirepass` and `--masterauth` for `password`.
fn auth_options(password: Option<&str>) -> Vec<String> {
    password.map_or_else(Vec::new, |p| {
        vec![
            "--requirepass".into(),
            p.into(),
            "--masterauth".into(),
            p.into(),
        ]
    })
}

/// Whether the master on `port` has a replica whose link is up.
fn has_replica(port: u16) -> bool {
    let info = ask(port, &["INFO", "replication"]);
    info.lines()
        .any(|line| line.starts_with("slave0:") && line.contains("state=online"))
}

/// Whether the replica on `port` has loaded its master's data and follows it.
fn in_sync(port: u16) -> bool {
    let info = ask(port, &["INFO", "replication"]);
    info.lines()
        .any(|line| line.trim() == "master_link_status:up")
        && info
            .lines()
            .any(|line| line.trim() == "master_sync_in_progress:0")
}

/// Whether the node on `port` serves `slot`, by its own line of `CLUSTER NODES`.
fn owns(port: u16, slot: u16) -> bool {
    let myself = ask(port, &["CLUSTER", "MYID"]);
    let nodes = ask(port, &["CLUSTER", "NODES"]);
    nodes
        .lines()
        .find(|line| line.starts_with(myself.trim()))
        .is_some_and(|line| {
            line.split_whitespace().skip(8).any(|range| {
                let (from, to) = range.split_once('-').unwrap_or((range, range));
                match (from.parse::<u16>(), to.parse::<u16>()) {
                    (Ok(from), Ok(to)) => (from..=to).contains(&slot),
                    _ => false,
                }
            })
        })
}

/// A Sentinel group: a master, its replica and three Sentinels watching them under the
/// name `mymaster`, failing over a second after the master stops answering.
#[derive(Debug)]
pub struct SentinelGroup {
    master: RedisProcess,
    replica: RedisProcess,
    sentinels: Vec<SentinelProcess>,
    password: Option<String>,
    sentinel_password: Option<String>,
}

/// The master's name in the group's URL.
pub const MASTER_NAME: &str = "mymaster";

impl SentinelGroup {
    /// Start the master, the replica and three Sentinels, and wait until every Sentinel
    /// knows the replica (so a failover can happen). Panics with what went wrong.
    pub fn start() -> Self {
        Self::start_with_passwords(None, None)
    }

    /// [`SentinelGroup::start`], the master and replica requiring `password`, and the
    /// Sentinels `sentinel_password`.
    pub fn start_with_passwords(password: Option<&str>, sentinel_password: Option<&str>) -> Self {
        let port = super::redis::free_port();
        remember_password(port, password);
        let master = RedisProcess::start_on(port, auth_options(password))
            .unwrap_or_else(|err| panic!("cannot start redis-server: {err}"));
        let port = super::redis::free_port();
        remember_password(port, password);
        let mut of = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port().to_string(),
        ];
        of.extend(auth_options(password));
        let replica = RedisProcess::start_on(port, of)
            .unwrap_or_else(|err| panic!("cannot start a replica: {err}"));
        let sentinels: Vec<SentinelProcess> = (0..3)
            .map(|_| SentinelProcess::start(master.port(), password, sentinel_password))
            .collect();
        let group = Self {
            master,
            replica,
            sentinels,
            password: password.map(str::to_owned),
            sentinel_password: sentinel_password.map(str::to_owned),
        };
        wait_until(
            "every Sentinel knows the replica",
            Duration::from_secs(30),
            || {
                group.sentinels.iter().all(|s| {
                    let replicas = ask(s.port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
                    replicas.contains(&group.replica.port().to_string())
                        && !ask(s.port, &["SENTINEL", "SENTINELS", MASTER_NAME])
                            .trim()
                            .is_empty()
                })
            },
        );
        group
    }

    /// `redis+sentinel://` naming the three Sentinels.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let userinfo = self
            .password
            .as_ref()
            .map_or(String::new(), |p| format!(":{p}@"));
        let query = self
            .sentinel_password
            .as_ref()
            .map_or(String::new(), |p| format!("?sentinel_password={p}"));
        format!(
            "redis+sentinel://{userinfo}{}/{MASTER_NAME}{query}",
            hosts.join(",")
        )
    }

    /// The port of the master the Sentinels name now.
    pub fn master_port(&self) -> u16 {
        let answer = ask(
            self.sentinels[0].port,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        );
        answer
            .lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kill -9 the master and wait until the Sentinels name the replica instead; returns
    /// the new master's port.
    pub fn kill_master(&self) -> u16 {
        let old = self.master_port();
        for node in [&self.master, &self.replica] {
            if node.port() == old {
                node.kill();
            }
        }
        wait_until(
            "the Sentinels promoted the replica",
            Duration::from_secs(30),
            || {
                let now = self.master_port();
                now != 0 && now != old && ask(now, &["ROLE"]).lines().next() == Some("master")
            },
        );
        self.master_port()
    }
}

impl SentinelGroup {
    /// Start the killed server again as a replica of the new master, as an operator
    /// brings back a server that keeps nothing on disk; returns once it is in sync.
    ///
    /// It comes back empty, so until it has synced it may not be promoted
    /// (`replica-priority 0`): a Sentinel that wrongly sees the master down (a stall on
    /// a loaded machine is enough with a one-second `down-after-milliseconds`) would
    /// otherwise promote it and every replica would copy its empty data set, the hazard
    /// Redis's replication guide warns of for masters without persistence.
    pub fn restart_killed(&self) {
        let master = self.master_port();
        for node in [&self.master, &self.replica] {
            if node.is_killed() {
                let more = [
                    "--replicaof".to_owned(),
                    "127.0.0.1".to_owned(),
                    master.to_string(),
                    "--replica-priority".to_owned(),
                    "0".to_owned(),
                ];
                node.start_again_with(&more)
                    .unwrap_or_else(|err| panic!("cannot start redis-server again: {err}"));
                wait_until(
                    "the restarted server is a replica in sync",
                    Duration::from_secs(30),
                    || in_sync(node.port()),
                );
                ask(node.port(), &["CONFIG", "SET", "replica-priority", "100"]);
            }
        }
        wait_until(
            "the master has a replica in sync",
            Duration::from_secs(30),
            || has_replica(self.master_port()),
        );
    }
}

/// One `redis-sentinel` (`redis-server --sentinel`) with a config file of its own.
#[derive(Debug)]
struct SentinelProcess {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl SentinelProcess {
    fn start(master_port: u16, password: Option<&str>, own_password: Option<&str>) -> Self {
        let port = super::redis::free_port();
        remember_password(port, own_password);
        let dir =
            std::env::temp_dir().join(format!("orchestra-sentinel-{port}-{}", std::process::id()));
        let conf = dir.join("sentinel.conf");
        let mut auth = String::new();
        if let Some(password) = password {
            auth += &format!("sentinel auth-pass {MASTER_NAME} {password}\n");
        }
        if let Some(password) = own_password {
            auth += &format!("requirepass {password}\n");
        }
        let text = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
            dir = dir.display()
        );
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&conf, text))
            .unwrap_or_else(|err| panic!("cannot write {}: {err}", conf.display()));
        // `redis-sentinel` is `redis-server` started as a Sentinel (Debian: redis-sentinel).
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start a Sentinel: {err} (see `scripts/test`)"));
        wait_until("a Sentinel listens", Duration::from_secs(5), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { port, dir, child }
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
