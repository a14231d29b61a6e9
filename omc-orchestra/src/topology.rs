//! Where Redis is: one server, a Sentinel group or a Cluster, chosen by the URL's scheme.
//!
//! | URL | Topology |
//! |-----|----------|
//! | `redis://[user:pass@]host:6379[/db]`, `rediss://…` (TLS) | one server |
//! | `redis+sentinel://[user:pass@]host1:26379,host2:26379/mymaster[/db]` | Sentinel: the current master |
//! | `redis+cluster://[user:pass@]host1:6379,host2:6379` | Cluster: the slot map |
//!
//! `rediss+sentinel://` and `rediss+cluster://` speak TLS to every node. The user and
//! password are those of the Redis nodes; Sentinels that require their own take
//! `?sentinel_username=…&sentinel_password=…`.
//!
//! Every store talks through a [`RedisConnection`], whatever the topology:
//! - one server: the `redis` crate's connection manager, which reconnects by itself;
//! - Sentinel: the same, to the master Sentinel names; on a dropped connection or a
//!   `READONLY` answer (the old master came back as a replica) it asks the Sentinels again
//!   and moves to the new master, so a failover needs no restart;
//! - Cluster: the `redis` crate's cluster connection, which follows `MOVED` and `ASK`
//!   and fetches the slot map again when the topology changes.

use crate::{Error, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How orchestra reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (`redis://`, `rediss://`).
    Single,
    /// A master found through Sentinels (`redis+sentinel://`).
    Sentinel,
    /// A Redis Cluster (`redis+cluster://`).
    Cluster,
}

impl Topology {
    /// The name `/health` and the logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Single => "single",
            Topology::Sentinel => "sentinel",
            Topology::Cluster => "cluster",
        }
    }
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Timeouts every connection uses: a dead node fails a call in seconds instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer than the longest blocking read the stores send (`BLOCK 1000`).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often at most the Sentinels are asked again while the master is unreachable.
const RESOLVE_EVERY: Duration = Duration::from_millis(200);

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(1))
}

/// A parsed Redis URL: what to connect to, in any topology.
#[derive(Clone)]
pub(crate) enum Target {
    /// One server.
    Single(Box<redis::Client>),
    /// A Sentinel group and the master's name.
    Sentinel(Arc<SentinelTarget>),
    /// A Redis Cluster and the nodes it was given.
    Cluster(Arc<ClusterTarget>),
}

/// A Redis Cluster and the nodes it was given.
pub(crate) struct ClusterTarget {
    /// The cluster client (slot map, redirections).
    client: ClusterClient,
    /// One client per seed node, for node-level work (pub/sub, `INFO`, `SCAN`).
    seeds: Vec<redis::Client>,
    /// The URL of each seed without its host, to reach nodes the cluster names.
    node_url: NodeUrl,
}

/// What it takes to reach a node by its address: scheme, user, password.
#[derive(Clone)]
pub(crate) struct NodeUrl {
    scheme: &'static str,
    userinfo: String,
}

impl NodeUrl {
    /// A client for the node at `host:port`.
    pub(crate) fn client(&self, address: &str) -> Result<redis::Client> {
        let url = format!("{}://{}{address}", self.scheme, self.userinfo);
        redis::Client::open(url.as_str()).map_err(invalid_url)
    }
}

/// Builds a client for the Sentinels (the driver's client cannot be cloned, and each
/// connection of its own asks the Sentinels on its own).
type MakeSentinelClient = Arc<dyn Fn() -> Result<SentinelClient> + Send + Sync>;

/// Where the Sentinels are, and the connection to the master they name now.
pub(crate) struct SentinelTarget {
    make: MakeSentinelClient,
    client: tokio::sync::Mutex<SentinelClient>,
    current: parking_lot::RwLock<Option<Arc<Master>>>,
    last_resolve: parking_lot::Mutex<Option<Instant>>,
}

/// The master in use, and which generation of it (so a failed call re-resolves once).
struct Master {
    generation: u64,
    address: String,
    client: redis::Client,
    connection: ConnectionManager,
}

fn invalid_url(err: impl std::fmt::Display) -> Error {
    // The error is shown to whoever started the server; the driver may quote the URL.
    Error::invalid("redisUrl", crate::redact::redact(&err.to_string()))
}

impl Target {
    /// Parse `url` (see the module docs).
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid_url(
                "must start with redis://, rediss://, redis+sentinel:// or redis+cluster://",
            )
        })?;
        let (topology, tls) = match scheme.to_ascii_lowercase().as_str() {
            "redis" | "unix" | "redis+unix" => (Topology::Single, false),
            "rediss" => (Topology::Single, true),
            "redis+sentinel" => (Topology::Sentinel, false),
            "rediss+sentinel" => (Topology::Sentinel, true),
            "redis+cluster" => (Topology::Cluster, false),
            "rediss+cluster" => (Topology::Cluster, true),
            other => {
                return Err(invalid_url(format!(
                    "unknown scheme `{other}`: use redis://, rediss://, redis+sentinel:// or \
                     redis+cluster://"
                )))
            }
        };
        if topology == Topology::Single {
            return Ok(Target::Single(Box::new(
                redis::Client::open(url).map_err(invalid_url)?,
            )));
        }
        let parts = Parts::split(rest)?;
        let node_url = NodeUrl {
            scheme: if tls { "rediss" } else { "redis" },
            userinfo: parts.userinfo.clone(),
        };
        match topology {
            Topology::Cluster => {
                if parts.path.iter().any(|p| !p.is_empty()) {
                    return Err(invalid_url(
                        "a cluster URL has no path: Redis Cluster has database 0 only",
                    ));
                }
                let seeds = parts
                    .hosts(6379)
                    .iter()
                    .map(|host| node_url.client(host))
                    .collect::<Result<Vec<_>>>()?;
                let infos = seeds
                    .iter()
                    .map(|c| c.get_connection_info().clone())
                    .collect::<Vec<_>>();
                let client = ClusterClient::builder(infos)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(4)
                    .max_retry_wait(1000)
                    .build()
                    .map_err(invalid_url)?;
                Ok(Target::Cluster(Arc::new(ClusterTarget {
                    client,
                    seeds,
                    node_url,
                })))
            }
            Topology::Sentinel => Ok(Target::Sentinel(Arc::new(SentinelTarget::build(
                &parts, &node_url, tls,
            )?))),
            Topology::Single => unreachable!("handled above"),
        }
    }

    /// Which topology this is.
    pub(crate) fn topology(&self) -> Topology {
        match self {
            Target::Single(_) => Topology::Single,
            Target::Sentinel(_) => Topology::Sentinel,
            Target::Cluster(_) => Topology::Cluster,
        }
    }

    /// A new connection (shared by whoever clones it).
    pub(crate) async fn connect(&self) -> Result<RedisConnection> {
        let link = match self {
            Target::Single(client) => Link::Single(
                client
                    .get_connection_manager_with_config(manager_config())
                    .await?,
            ),
            Target::Sentinel(target) => {
                let own = Arc::new(SentinelTarget::fresh(target).await?);
                Link::Sentinel(own)
            }
            Target::Cluster(cluster) => {
                Link::Cluster(Box::new(cluster.client.get_async_connection().await?))
            }
        };
        Ok(RedisConnection { link })
    }

    /// A pub/sub connection: to the server, to the master, or to any live cluster node
    /// (Cluster passes every `PUBLISH` on to every node).
    pub(crate) async fn pubsub(&self) -> Result<redis::aio::PubSub> {
        let nodes = self.nodes().await?;
        let mut last = None;
        for node in nodes {
            match node.get_async_pubsub().await {
                Ok(pubsub) => return Ok(pubsub),
                Err(err) => last = Some(err),
            }
        }
        Err(last.map_or_else(
            || Error::Backend("no Redis node answers".into()),
            Into::into,
        ))
    }

    /// A client per node that holds data: the server, the current master, or each
    /// cluster master (found by `CLUSTER SHARDS` from a live seed; the seeds when none
    /// answers).
    pub(crate) async fn nodes(&self) -> Result<Vec<redis::Client>> {
        match self {
            Target::Single(client) => Ok(vec![(**client).clone()]),
            Target::Sentinel(target) => Ok(vec![target.master().await?.client.clone()]),
            Target::Cluster(cluster) => {
                for seed in &cluster.seeds {
                    if let Ok(masters) = cluster_masters(seed).await {
                        if !masters.is_empty() {
                            return masters.iter().map(|a| cluster.node_url.client(a)).collect();
                        }
                    }
                }
                Ok(cluster.seeds.clone())
            }
        }
    }
}

/// The addresses of the masters a cluster node knows, from `CLUSTER NODES` (one line per
/// node: `id host:port@bus flags master-id …`; failed masters left out).
async fn cluster_masters(seed: &redis::Client) -> Result<Vec<String>> {
    let connect = seed.get_multiplexed_async_connection();
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| Error::Backend("cluster node did not answer".into()))??;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok(nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let is_live_master = flags.split(',').any(|f| f == "master")
                && !flags
                    .split(',')
                    .any(|f| f == "fail" || f == "fail?" || f == "noaddr");
            let slots = fields.len() > 8;
            let address = fields.get(1)?.split('@').next()?;
            (is_live_master && slots).then(|| address.to_owned())
        })
        .collect())
}

/// The parts of a multi-host URL: `userinfo@host1,host2/path?query`.
struct Parts {
    /// `user:pass@` as given (still percent-encoded), or empty.
    userinfo: String,
    hosts: Vec<String>,
    path: Vec<String>,
    query: Vec<(String, String)>,
}

impl Parts {
    fn split(rest: &str) -> Result<Self> {
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((user, hosts)) => (format!("{user}@"), hosts),
            None => (String::new(), authority),
        };
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        if hosts.is_empty() {
            return Err(invalid_url("names no host"));
        }
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        Ok(Self {
            userinfo,
            hosts,
            path: path.split('/').map(str::to_owned).collect(),
            query,
        })
    }

    /// Each host as `host:port`, with `port` where none is given.
    fn hosts(&self, port: u16) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| {
                let has_port = match h.rfind(']') {
                    Some(end) => h[end..].contains(':'),
                    None => h.contains(':'),
                };
                if has_port {
                    h.clone()
                } else {
                    format!("{h}:{port}")
                }
            })
            .collect()
    }

    fn query(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| percent_decode(v))
    }
}

/// `%XX` escapes decoded (query values of the URL).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SentinelTarget {
    fn build(parts: &Parts, node_url: &NodeUrl, tls: bool) -> Result<Self> {
        let make = Self::maker(parts, node_url, tls)?;
        Self::with_maker(make)
    }

    fn with_maker(make: MakeSentinelClient) -> Result<Self> {
        Ok(Self {
            client: tokio::sync::Mutex::new(make()?),
            make,
            current: parking_lot::RwLock::new(None),
            last_resolve: parking_lot::Mutex::new(None),
        })
    }

    fn maker(parts: &Parts, node_url: &NodeUrl, tls: bool) -> Result<MakeSentinelClient> {
        let master = parts
            .path
            .first()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid_url("a Sentinel URL names the master: …/mymaster"))?;
        let sentinels = parts
            .hosts(26379)
            .into_iter()
            .map(|host| {
                let url = format!("redis://{host}");
                let info = url.as_str().into_connection_info().map_err(invalid_url)?;
                Ok(match info.addr().clone() {
                    ConnectionAddr::Tcp(host, port) if tls => ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    },
                    addr => addr,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The nodes' user, password and database, decoded as the driver decodes them.
        let db = parts.path.get(1).filter(|d| !d.is_empty());
        let probe = format!(
            "redis://{}localhost/{}",
            node_url.userinfo,
            db.map_or("0", String::as_str)
        );
        let info = probe.as_str().into_connection_info().map_err(invalid_url)?;
        let settings = info.redis_settings().clone();
        let master = master.clone();
        let sentinel_user = parts.query("sentinel_username");
        let sentinel_password = parts.query("sentinel_password");
        Ok(Arc::new(move || {
            let mut builder = SentinelClientBuilder::new(
                sentinels.clone(),
                master.as_str(),
                SentinelServerType::Master,
            )
            .map_err(invalid_url)?
            .set_client_to_redis_db(settings.db());
            if let Some(user) = settings.username() {
                builder = builder.set_client_to_redis_username(user);
            }
            if let Some(password) = settings.password() {
                builder = builder.set_client_to_redis_password(password);
            }
            if let Some(user) = &sentinel_user {
                builder = builder.set_client_to_sentinel_username(user);
            }
            if let Some(password) = &sentinel_password {
                builder = builder.set_client_to_sentinel_password(password);
            }
            if tls {
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            }
            builder.build().map_err(invalid_url)
        }))
    }

    /// A target of its own on the same Sentinels (its own connection to the master).
    async fn fresh(shared: &SentinelTarget) -> Result<Self> {
        let own = Self::with_maker(shared.make.clone())?;
        own.master().await?;
        Ok(own)
    }

    /// The master in use, asking the Sentinels when there is none yet.
    async fn master(&self) -> Result<Arc<Master>> {
        if let Some(master) = self.current.read().clone() {
            return Ok(master);
        }
        self.resolve(None).await?;
        self.current
            .read()
            .clone()
            .ok_or_else(|| Error::Backend("no Sentinel names a master".into()))
    }

    /// Ask the Sentinels for the master, and move to it when it is another server than
    /// the one of generation `failed` (a call that failed there asks; the first caller
    /// re-resolves, the rest find it done).
    async fn resolve(&self, failed: Option<u64>) -> Result<()> {
        let mut client = self.client.lock().await;
        let current = self.current.read().clone();
        if let (Some(failed), Some(current)) = (failed, &current) {
            if current.generation != failed {
                return Ok(());
            }
            let mut last = self.last_resolve.lock();
            if last.is_some_and(|at| at.elapsed() < RESOLVE_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let master = client.async_get_client().await.map_err(|err| {
            Error::Backend(
                format!(
                    "no Sentinel names a master: {}",
                    crate::redact::redact(&err.to_string())
                )
                .into(),
            )
        })?;
        let address = master.get_connection_info().addr().to_string();
        if current.as_ref().is_some_and(|c| c.address == address) {
            return Ok(());
        }
        let connection = master
            .get_connection_manager_with_config(manager_config())
            .await?;
        let generation = current.map_or(0, |c| c.generation + 1);
        if generation > 0 {
            tracing::warn!(master = %address, "redis sentinel: moved to the new master");
        }
        *self.current.write() = Some(Arc::new(Master {
            generation,
            address,
            client: master,
            connection,
        }));
        Ok(())
    }
}

/// One connection to Redis in any topology, shared by its clones; what the stores send
/// every command on.
#[derive(Clone)]
pub struct RedisConnection {
    link: Link,
}

#[derive(Clone)]
enum Link {
    Single(ConnectionManager),
    Sentinel(Arc<SentinelTarget>),
    Cluster(Box<ClusterConnection>),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topology = match self.link {
            Link::Single(_) => Topology::Single,
            Link::Sentinel(_) => Topology::Sentinel,
            Link::Cluster(_) => Topology::Cluster,
        };
        f.debug_struct("RedisConnection")
            .field("topology", &topology)
            .finish_non_exhaustive()
    }
}

/// Whether an error says the master is gone or is no longer the master: the Sentinels
/// are asked again.
fn master_lost(err: &redis::RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                | redis::ErrorKind::Server(redis::ServerErrorKind::MasterDown)
        )
}

/// Whether a reply carries an answer that says this server is no longer the master. The
/// driver hands server errors back as values (a pipeline's, and a command's alike) and
/// turns them into errors only when the caller reads them, so they are looked for here.
fn says_master_lost(value: &Value) -> bool {
    match value {
        Value::ServerError(err) => matches!(
            err.kind(),
            Some(redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown)
        ),
        _ => false,
    }
}

/// What a reply says about the master: one value, or each value of a pipeline's reply.
trait Reply {
    fn master_lost(&self) -> bool;
}

impl Reply for Value {
    fn master_lost(&self) -> bool {
        says_master_lost(self)
    }
}

impl Reply for Vec<Value> {
    fn master_lost(&self) -> bool {
        self.iter().any(says_master_lost)
    }
}

async fn on_master<T: Reply>(
    target: &SentinelTarget,
    send: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    let master = target.master().await.map_err(|err| {
        redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::NotConnected,
            err.to_string(),
        ))
    })?;
    let mut connection = master.connection.clone();
    let answer = send(&mut connection).await;
    let lost = match &answer {
        Ok(reply) => reply.master_lost(),
        Err(err) => master_lost(err),
    };
    if lost {
        if let Err(resolve) = target.resolve(Some(master.generation)).await {
            tracing::debug!(error = %resolve, "redis sentinel: master not found yet");
        }
    }
    answer
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_command(cmd),
            Link::Cluster(conn) => conn.req_packed_command(cmd),
            Link::Sentinel(target) => Box::pin(async move {
                on_master(target, async |conn: &mut ConnectionManager| {
                    conn.req_packed_command(cmd).await
                })
                .await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Link::Sentinel(target) => Box::pin(async move {
                on_master(target, async |conn: &mut ConnectionManager| {
                    conn.req_packed_commands(pipeline, offset, count).await
                })
                .await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(conn) => conn.get_db(),
            Link::Cluster(conn) => conn.get_db(),
            Link::Sentinel(target) => target
                .current
                .read()
                .as_ref()
                .map_or(0, |m| m.connection.get_db()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_topology() {
        let single = Target::parse("redis://:secret@127.0.0.1:6379/2").unwrap();
        assert_eq!(single.topology(), Topology::Single);
        let cluster = Target::parse("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2").unwrap();
        assert_eq!(cluster.topology(), Topology::Cluster);
        let Target::Cluster(cluster) = &cluster else {
            panic!("not a cluster");
        };
        let second = cluster.seeds[1].get_connection_info();
        assert_eq!(second.addr().to_string(), "10.0.0.2:6379");
        assert_eq!(second.redis_settings().password(), Some("p@ss"));
        assert_eq!(second.redis_settings().username(), Some("u"));
        let sentinel =
            Target::parse("redis+sentinel://:pw@s1:26379,s2,s3:26380/mymaster/3").unwrap();
        assert_eq!(sentinel.topology(), Topology::Sentinel);
    }

    #[test]
    fn bad_urls_say_what_is_wrong_without_the_password() {
        for (url, says) in [
            ("http://127.0.0.1", "unknown scheme"),
            ("127.0.0.1:6379", "must start with"),
            ("redis+sentinel://:hunter2@s1:26379", "names the master"),
            ("redis+sentinel://:hunter2@/mymaster", "names no host"),
            ("redis+cluster://:hunter2@h1:7000/3", "no path"),
        ] {
            let Err(err) = Target::parse(url) else {
                panic!("{url} was accepted");
            };
            let text = err.to_string();
            assert!(text.contains(says), "{url}: {text}");
            assert!(!text.contains("hunter2"), "{url}: {text}");
        }
    }

    #[test]
    fn query_values_are_decoded() {
        let parts = Parts::split("h1/m?sentinel_password=a%26b&x").unwrap();
        assert_eq!(parts.query("sentinel_password").as_deref(), Some("a&b"));
        assert_eq!(parts.query("x").as_deref(), Some(""));
        assert_eq!(parts.hosts(26379), vec!["h1:26379"]);
        let v6 = Parts::split("[::1],[::2]:7001").unwrap();
        assert_eq!(v6.hosts(6379), vec!["[::1]:6379", "[::2]:7001"]);
    }
}
