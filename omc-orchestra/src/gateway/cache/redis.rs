//! Cached answers in Redis, shared by every gateway replica.
//!
//! Key layout (all keys of one route share its hash tag):
//!
//! - `{prefix}:cache:{<route>}:v:<consumer>\n<path>` — JSON array of the `Vary` header
//!   names of that request.
//! - `{prefix}:cache:{<route>}:e:<consumer>\n<path>\n<variant>` — one answer: a JSON line
//!   (status, headers, expiry) then the raw body.
//! - `{prefix}:cache:{<route>}:index` — sorted set of the route's keys by expiry, for
//!   purges; trimmed of expired members on every store and capped at `max_entries`.
//!
//! Every key has a `PX` TTL (the entry's freshness plus a minute), so nothing outlives
//! its use; storing and purging are one script each.

use super::{CacheConfig, CacheKey, CacheStore, CachedResponse};
use crate::{Error, RedisStore, Result, SharedClock};
use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

const PUT: &str = r"
local px = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
redis.call('SET', KEYS[2], ARGV[2], 'PX', px)
redis.call('ZADD', KEYS[3], ARGV[4], KEYS[1], ARGV[4], KEYS[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
if redis.call('PTTL', KEYS[3]) < px then
  redis.call('PEXPIRE', KEYS[3], px)
end
local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[6])
if excess > 0 then
  for _, key in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess - 1)) do
    redis.call('DEL', key)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, excess - 1)
end
return 1
";

const PURGE: &str = r"
local purged = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local hit = ARGV[1] == ''
    or string.find(key, ARGV[1] .. '\n', 1, true)
    or string.sub(key, -#ARGV[1]) == ARGV[1]
  if hit then
    local gone = redis.call('DEL', key)
    if string.find(key, ARGV[2], 1, true) then
      purged = purged + gone
    end
    redis.call('ZREM', KEYS[1], key)
  end
end
return purged
";

/// Slack on every key's TTL beyond the entry's freshness.
const SLACK_MS: i64 = 60_000;

#[derive(Serialize, Deserialize)]
struct Meta {
    status: u16,
    expires_ms: i64,
    headers: Vec<(String, String)>,
}

fn encode(entry: &CachedResponse) -> Result<Vec<u8>> {
    let meta = Meta {
        status: entry.status.as_u16(),
        expires_ms: entry.expires_ms,
        headers: entry
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    };
    let mut out = serde_json::to_vec(&meta).map_err(Error::backend)?;
    out.push(b'\n');
    out.extend_from_slice(&entry.body);
    Ok(out)
}

fn decode(raw: &[u8]) -> Option<CachedResponse> {
    let split = raw.iter().position(|b| *b == b'\n')?;
    let meta: Meta = serde_json::from_slice(&raw[..split]).ok()?;
    let mut headers = HeaderMap::new();
    for (name, value) in meta.headers {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(&value).ok()?,
        );
    }
    Some(CachedResponse {
        status: StatusCode::from_u16(meta.status).ok()?,
        headers,
        body: Bytes::copy_from_slice(&raw[split + 1..]),
        expires_ms: meta.expires_ms,
    })
}

/// Cached answers in Redis.
#[derive(Debug, Clone)]
pub struct RedisCacheStore {
    store: RedisStore,
    clock: SharedClock,
    config: CacheConfig,
    put: redis::Script,
    purge: redis::Script,
}

impl RedisCacheStore {
    /// A cache in `store`, bounded by `config`; `clock` dates the entries.
    pub fn new(store: RedisStore, config: CacheConfig, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            config,
            put: redis::Script::new(PUT),
            purge: redis::Script::new(PURGE),
        }
    }

    fn key(&self, route: &str, name: &str) -> String {
        self.store
            .key("cache", &route.replace(['{', '}'], "_"), name)
    }
}

#[async_trait]
impl CacheStore for RedisCacheStore {
    async fn vary(&self, key: &CacheKey) -> Result<Option<Vec<String>>> {
        let name = self.key(&key.route, &format!("v:{}", key.base()));
        let raw: Option<String> = self
            .store
            .retry(|mut conn| {
                let name = name.clone();
                async move { redis::cmd("GET").arg(name).query_async(&mut conn).await }
            })
            .await?;
        Ok(raw.and_then(|text| serde_json::from_str(&text).ok()))
    }

    async fn get(&self, key: &CacheKey, variant: &str) -> Result<Option<CachedResponse>> {
        let name = self.key(&key.route, &format!("e:{}\n{variant}", key.base()));
        let raw: Option<Vec<u8>> = self
            .store
            .retry(|mut conn| {
                let name = name.clone();
                async move { redis::cmd("GET").arg(name).query_async(&mut conn).await }
            })
            .await?;
        Ok(raw.as_deref().and_then(decode))
    }

    async fn put(
        &self,
        key: &CacheKey,
        vary: &[String],
        variant: &str,
        entry: &CachedResponse,
    ) -> Result<()> {
        let now = self.clock.now_ms();
        let px = (entry.expires_ms - now).max(1) + SLACK_MS;
        let vary_key = self.key(&key.route, &format!("v:{}", key.base()));
        let entry_key = self.key(&key.route, &format!("e:{}\n{variant}", key.base()));
        let index = self.key(&key.route, "index");
        let vary_json = serde_json::to_string(vary).map_err(Error::backend)?;
        let body = encode(entry)?;
        let max = self.config.max_entries.max(1) * 2;
        self.store
            .retry(|mut conn| {
                let mut call = self.put.prepare_invoke();
                call.key(&vary_key)
                    .key(&entry_key)
                    .key(&index)
                    .arg(&vary_json)
                    .arg(&body)
                    .arg(px)
                    .arg(entry.expires_ms)
                    .arg(now)
                    .arg(max);
                async move { call.invoke_async::<i64>(&mut conn).await }
            })
            .await?;
        Ok(())
    }

    async fn purge(&self, route: &str, path: Option<&str>) -> Result<usize> {
        let index = self.key(route, "index");
        let pattern = path.map(|p| format!("\n{p}")).unwrap_or_default();
        let purged: i64 = self
            .store
            .retry(|mut conn| {
                let mut call = self.purge.prepare_invoke();
                call.key(&index).arg(&pattern).arg(":e:");
                async move { call.invoke_async(&mut conn).await }
            })
            .await?;
        Ok(usize::try_from(purged).unwrap_or(0))
    }
}
