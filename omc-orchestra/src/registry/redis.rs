//! The Redis registry: any number of servers share one registry.
//!
//! Keys (all under one hash tag, so every script works on Redis Cluster):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `{prefix}:reg:{registry}:inst` | hash | id → instance JSON (as registered) |
//! | `{prefix}:reg:{registry}:state` | hash | id → `registeredMs\|heartbeatMs\|check\|expired\|ttlMs\|address` |
//! | `{prefix}:reg:{registry}:deadline` | zset | id → heartbeat deadline (ms) |
//! | `{prefix}:reg:{registry}:addr` | hash | `name\|host\|port` → id |
//! | `{prefix}:reg:{registry}:changes` | stream | the watch stream, capped at [`CHANGES_MAXLEN`] |
//! | `{prefix}:reg:{registry}:svc:{name}` | set | the ids of one service's instances, so discovery reads that service alone |
//! | `{prefix}:reg:{registry}:svc:~indexed` | string | set once every instance stored before the service sets is indexed |
//! | `{prefix}:reg:{registry}:all` | zset | every instance as `name \0 id`, score 0: the listing index, read in pages by `ZRANGEBYLEX` |
//! | `{prefix}:reg:{registry}:ver` | hash | service name → its change index, bumped with every change announced |
//!
//! Every change is one Lua script that also appends to the change stream, so a watcher on
//! any replica sees every replica's changes, and stale cleanup run by several replicas at
//! once removes (and announces) each instance exactly once.

use super::{
    page_cursor, parse_page_cursor, ChangeKind, HealthStatus, Registration, Registry,
    RegistryChange, RegistryOptions, ServiceFilter, ServiceInstance, ServiceInstances, ServicePage,
    WATCH_CAPACITY,
};
use crate::backend::RedisStore;
use crate::clock::SharedClock;
use crate::{Error, Result};
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::streams::StreamId;
use redis::{Script, Value};
use std::collections::HashMap;

use tokio::sync::broadcast;

/// Most entries the change stream keeps.
pub const CHANGES_MAXLEN: usize = 10_000;
/// Most instances one stale-cleanup pass handles.
const REAP_BATCH: usize = 10_000;
/// Most listing members one page script reads.
const PAGE_CHUNK: usize = 500;
/// Most page scripts one page runs, so a filter that matches little cannot make one call
/// read the whole registry; the page then ends early with a cursor to go on.
const PAGE_CHUNKS: usize = 20;

const PRELUDE: &str = r#"
local INST, STATE, DEADLINE, ADDR, CHANGES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SVC, VER, ALL = KEYS[6], KEYS[7], KEYS[8]
local NOW, MAXLEN = tonumber(ARGV[1]), ARGV[2]
-- The service name of an address `name|host|port`.
local function service_of(addr) return string.match(addr, "^([^|]*)") end
-- An instance's member of the listing index: `name \0 id`, so it sorts by name, then id.
local function listed(addr, id) return service_of(addr) .. "\0" .. id end
local function parse(st)
  local regat, hb, check, expired, ttl, addr =
    string.match(st, "^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$")
  return {regat = regat, hb = tonumber(hb), check = check, expired = expired,
          ttl = tonumber(ttl), addr = addr}
end
local function fmt(s)
  return s.regat .. "|" .. string.format("%d", s.hb) .. "|" .. s.check .. "|" .. s.expired
    .. "|" .. string.format("%d", s.ttl) .. "|" .. s.addr
end
local function effective(s)
  if s.expired == "1" or NOW > s.hb + s.ttl then return "critical" end
  return s.check
end
local function emit(kind, json, st, prev)
  redis.call('XADD', CHANGES, 'MAXLEN', '~', MAXLEN, '*',
    'k', kind, 'i', json, 's', st, 'p', prev, 't', ARGV[1])
  redis.call('HINCRBY', VER, service_of(parse(st).addr), 1)
end
local function remove(id)
  local st = redis.call('HGET', STATE, id)
  if not st then return nil end
  local json = redis.call('HGET', INST, id)
  local s = parse(st)
  redis.call('HDEL', INST, id)
  redis.call('HDEL', STATE, id)
  redis.call('ZREM', DEADLINE, id)
  redis.call('SREM', SVC .. service_of(s.addr), id)
  redis.call('ZREM', ALL, listed(s.addr, id))
  if redis.call('HGET', ADDR, s.addr) == id then redis.call('HDEL', ADDR, s.addr) end
  return json, st, s
end
-- Apply `change` to an instance's state; announce a change of effective status.
local function update(id, change)
  local st = redis.call('HGET', STATE, id)
  if not st then return false end
  local s = parse(st)
  local prev = effective(s)
  change(s)
  local nst = fmt(s)
  redis.call('HSET', STATE, id, nst)
  local json = redis.call('HGET', INST, id)
  local kind = ''
  if prev ~= effective(s) then kind = 'healthChanged'; emit(kind, json, nst, prev) end
  return {kind, json, nst, prev}
end
"#;

const REGISTER: &str = r#"
local id, addr, json, ttl = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local old = redis.call('HGET', ADDR, addr)
if old and old ~= id then
  local ojson, ost, os = remove(old)
  if ost then emit('deregistered', ojson, ost, effective(os)) end
end
local prevst = redis.call('HGET', STATE, id)
local kind, prev, regat = 'registered', '', ARGV[1]
if prevst then
  local p = parse(prevst)
  kind, prev, regat = 'updated', effective(p), p.regat
  if p.addr ~= addr and redis.call('HGET', ADDR, p.addr) == id then
    redis.call('HDEL', ADDR, p.addr)
  end
  redis.call('SREM', SVC .. service_of(p.addr), id)
  redis.call('ZREM', ALL, listed(p.addr, id))
  -- Moved to another service: it left the one it was in.
  if service_of(p.addr) ~= service_of(addr) then
    emit('deregistered', redis.call('HGET', INST, id), prevst, prev)
  end
end
redis.call('SADD', SVC .. service_of(addr), id)
redis.call('ZADD', ALL, 0, listed(addr, id))
local st = fmt({regat = regat, hb = NOW, check = 'passing', expired = '0', ttl = ttl, addr = addr})
redis.call('HSET', INST, id, json)
redis.call('HSET', STATE, id, st)
redis.call('ZADD', DEADLINE, string.format("%d", NOW + ttl), id)
redis.call('HSET', ADDR, addr, id)
emit(kind, json, st, prev)
return {kind, json, st, prev}
"#;

const HEARTBEAT: &str = r#"
return update(ARGV[3], function(s)
  s.hb, s.expired = NOW, '0'
  redis.call('ZADD', DEADLINE, string.format("%d", NOW + s.ttl), ARGV[3])
end)
"#;

const DEREGISTER: &str = r#"
local json, st, s = remove(ARGV[3])
if not st then return false end
local prev = effective(s)
emit('deregistered', json, st, prev)
return {'deregistered', json, st, prev}
"#;

const SET_HEALTH: &str = r#"
return update(ARGV[3], function(s) s.check = ARGV[4] end)
"#;

const REAP: &str = r#"
local out = {}
local dead = redis.call('ZRANGEBYSCORE', DEADLINE, '-inf',
  '(' .. string.format("%d", NOW - tonumber(ARGV[3])), 'LIMIT', 0, ARGV[4])
for _, id in ipairs(dead) do
  local json, st, s = remove(id)
  if st then
    s.expired = '1'
    local vst = fmt(s)
    emit('expired', json, vst, 'critical')
    table.insert(out, {'expired', json, vst, 'critical'})
  end
end
local late = redis.call('ZRANGEBYSCORE', DEADLINE, '-inf',
  '(' .. string.format("%d", NOW), 'LIMIT', 0, ARGV[4])
for _, id in ipairs(late) do
  local st = redis.call('HGET', STATE, id)
  if st then
    local s = parse(st)
    if s.expired ~= '1' then
      local prev = s.check
      s.expired = '1'
      local nst = fmt(s)
      redis.call('HSET', STATE, id, nst)
      local json = redis.call('HGET', INST, id)
      emit('healthChanged', json, nst, prev)
      table.insert(out, {'healthChanged', json, nst, prev})
    end
  end
end
return out
"#;

/// One service's index, then `json, state` of each of its instances, ordered by id.
const SERVICE: &str = r#"
local name = ARGV[3]
local out = {redis.call('HGET', VER, name) or '0'}
local ids = redis.call('SMEMBERS', SVC .. name)
table.sort(ids)
-- HMGET in chunks: Lua's unpack takes a few thousand values at most.
for i = 1, #ids, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #ids) do chunk[#chunk + 1] = ids[j] end
  local jsons = redis.call('HMGET', INST, unpack(chunk))
  local states = redis.call('HMGET', STATE, unpack(chunk))
  for k = 1, #chunk do
    if jsons[k] and states[k] then
      out[#out + 1] = jsons[k]
      out[#out + 1] = states[k]
    end
  end
end
return out
"#;

/// Up to ARGV[5] listing members between the bounds ARGV[3] and ARGV[4]
/// (`ZRANGEBYLEX`), each with its instance's JSON and state (empty when gone).
const PAGE: &str = r#"
local out = {}
local members = redis.call('ZRANGEBYLEX', ALL, ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(members) do
  local id = string.match(member, "%z(.*)$")
  out[#out + 1] = member
  out[#out + 1] = redis.call('HGET', INST, id) or ''
  out[#out + 1] = redis.call('HGET', STATE, id) or ''
end
return out
"#;

/// Index every instance under its service once: what a version without the service
/// sets stored is found by discovery after an upgrade.
const INDEX_SERVICES: &str = r#"
if redis.call('SET', SVC .. '~indexed', '1', 'NX') == false then return 0 end
local states = redis.call('HGETALL', STATE)
for i = 1, #states, 2 do
  local addr = parse(states[i + 1]).addr
  redis.call('SADD', SVC .. service_of(addr), states[i])
  redis.call('ZADD', ALL, 0, listed(addr, states[i]))
end
return #states / 2
"#;

struct Scripts {
    page: Script,
    service: Script,
    register: Script,
    heartbeat: Script,
    deregister: Script,
    set_health: Script,
    reap: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            page: with_prelude(PAGE),
            service: with_prelude(SERVICE),
            register: with_prelude(REGISTER),
            heartbeat: with_prelude(HEARTBEAT),
            deregister: with_prelude(DEREGISTER),
            set_health: with_prelude(SET_HEALTH),
            reap: with_prelude(REAP),
        }
    }
}

/// The stored state of one instance, besides its registration.
struct StoredState {
    registered_ms: i64,
    heartbeat_ms: i64,
    check: HealthStatus,
    expired: bool,
}

fn parse_state(state: &str) -> Result<StoredState> {
    let mut parts = state.splitn(6, '|');
    let mut next = || {
        parts
            .next()
            .ok_or_else(|| Error::Backend(format!("malformed registry state `{state}`").into()))
    };
    let number = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Error::Backend(format!("malformed registry state `{state}`").into()))
    };
    Ok(StoredState {
        registered_ms: number(next()?)?,
        heartbeat_ms: number(next()?)?,
        check: next()?.parse()?,
        expired: next()? == "1",
    })
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// Rebuild an instance from its stored JSON and state, with its status as of `now`.
fn rebuild(json: &str, state: &str, now: DateTime<Utc>) -> Result<ServiceInstance> {
    let mut instance: ServiceInstance = serde_json::from_str(json)?;
    let state = parse_state(state)?;
    instance.registered_at = from_ms(state.registered_ms);
    instance.last_heartbeat = from_ms(state.heartbeat_ms);
    instance.check_status = state.check;
    instance.refresh_status(now);
    if state.expired {
        instance.status = HealthStatus::Critical;
    }
    Ok(instance)
}

fn parse_kind(kind: &str) -> Option<ChangeKind> {
    Some(match kind {
        "registered" => ChangeKind::Registered,
        "updated" => ChangeKind::Updated,
        "deregistered" => ChangeKind::Deregistered,
        "healthChanged" => ChangeKind::HealthChanged,
        "expired" => ChangeKind::Expired,
        _ => return None,
    })
}

/// A script's answer: `{kind, json, state, previous}`, or nil when the id is unknown.
type Outcome = Option<(String, String, String, String)>;

/// A registry kept in Redis, shared by every server that points at the same Redis and
/// prefix.
pub struct RedisRegistry {
    store: RedisStore,
    keys: [String; 8],
    scripts: Scripts,
    clock: SharedClock,
    options: RegistryOptions,
    changes: broadcast::Sender<RegistryChange>,
    watcher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRegistry")
            .field("keys", &self.keys)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisRegistry {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl RedisRegistry {
    /// A registry in `store`, under the store's prefix. Its watch stream starts with the
    /// changes made after this call, by any replica.
    pub async fn new(
        store: RedisStore,
        clock: SharedClock,
        options: RegistryOptions,
    ) -> Result<Self> {
        let keys = [
            "inst", "state", "deadline", "addr", "changes", "svc:", "ver", "all",
        ]
        .map(|name| store.key("reg", "registry", name));
        let changes = broadcast::channel(WATCH_CAPACITY).0;
        let tail = store.stream_tail(&keys[4]).await?;
        let watcher = store.follow_stream(
            keys[4].clone(),
            tail,
            256,
            "registry watch",
            decode_change,
            changes.clone(),
        );
        let registry = Self {
            store,
            keys,
            scripts: Scripts::new(),
            clock,
            options,
            changes,
            watcher,
        };
        let index = Script::new(&format!("{PRELUDE}{INDEX_SERVICES}"));
        let indexed: i64 = redis::from_redis_value(registry.run(&index, &[]).await?)?;
        if indexed > 0 {
            tracing::info!(
                instances = indexed,
                "registry: indexed instances by service"
            );
        }
        Ok(registry)
    }

    async fn run(&self, script: &Script, args: &[&str]) -> Result<redis::Value> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.run_bytes(script, &args).await
    }

    /// [`RedisRegistry::run`] with arguments that need not be UTF-8 (listing bounds).
    async fn run_bytes(&self, script: &Script, args: &[&[u8]]) -> Result<redis::Value> {
        let now = self.clock.now_ms().to_string();
        let maxlen = CHANGES_MAXLEN.to_string();
        self.store
            .retry(|mut conn| {
                let mut invocation = script.prepare_invoke();
                for key in &self.keys {
                    invocation.key(key);
                }
                invocation.arg(&now).arg(&maxlen);
                for arg in args {
                    invocation.arg(*arg);
                }
                async move { invocation.invoke_async::<Value>(&mut conn).await }
            })
            .await
    }

    fn outcome(value: Value) -> Result<Outcome> {
        Ok(redis::from_redis_value::<
            Option<(String, String, String, String)>,
        >(value)?)
    }

    fn change(
        &self,
        kind: &str,
        json: &str,
        state: &str,
        previous: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<RegistryChange>> {
        let Some(kind) = parse_kind(kind) else {
            return Ok(None);
        };
        Ok(Some(RegistryChange {
            kind,
            instance: rebuild(json, state, at)?,
            previous_status: previous.parse().ok(),
            at,
        }))
    }
}

/// The change a change-stream entry records (`None`, logged when malformed, to skip it).
fn decode_change(entry: &StreamId) -> Option<RegistryChange> {
    let field = |name: &str| entry.get::<String>(name).unwrap_or_default();
    let at = from_ms(field("t").parse().unwrap_or_default());
    let kind = parse_kind(&field("k"))?;
    match rebuild(&field("i"), &field("s"), at) {
        Ok(instance) => Some(RegistryChange {
            kind,
            instance,
            previous_status: field("p").parse().ok(),
            at,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "skipping malformed registry change");
            None
        }
    }
}

#[async_trait]
impl Registry for RedisRegistry {
    async fn register(&self, registration: Registration) -> Result<ServiceInstance> {
        registration.validate()?;
        let now = self.clock.now();
        let instance =
            ServiceInstance::from_registration(&registration, self.options.default_ttl, now);
        let json = serde_json::to_string(&instance)?;
        let ttl_ms = (i64::from(instance.ttl_seconds) * 1000).to_string();
        let address = instance.address_key();
        let value = self
            .run(
                &self.scripts.register,
                &[&instance.id, &address, &json, &ttl_ms],
            )
            .await?;
        let (_, json, state, _) =
            Self::outcome(value)?.ok_or_else(|| Error::Backend("register returned nil".into()))?;
        rebuild(&json, &state, now)
    }

    async fn heartbeat(&self, id: &str) -> Result<ServiceInstance> {
        let value = self.run(&self.scripts.heartbeat, &[id]).await?;
        let (_, json, state, _) =
            Self::outcome(value)?.ok_or_else(|| Error::not_found("service", id))?;
        rebuild(&json, &state, self.clock.now())
    }

    async fn deregister(&self, id: &str) -> Result<ServiceInstance> {
        let value = self.run(&self.scripts.deregister, &[id]).await?;
        let (_, json, state, _) =
            Self::outcome(value)?.ok_or_else(|| Error::not_found("service", id))?;
        rebuild(&json, &state, self.clock.now())
    }

    async fn get(&self, id: &str) -> Result<ServiceInstance> {
        let (json, state): (Option<String>, Option<String>) = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hget(&self.keys[0], id)
                    .hget(&self.keys[1], id);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        match (json, state) {
            (Some(json), Some(state)) => rebuild(&json, &state, self.clock.now()),
            _ => Err(Error::not_found("service", id)),
        }
    }

    async fn list_page(
        &self,
        filter: &ServiceFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<ServicePage> {
        let member = |name: &str, id: &str| [name.as_bytes(), b"\0", id.as_bytes()].concat();
        let mut start = match cursor.map(parse_page_cursor).transpose()? {
            Some((name, id)) => [b"(".as_slice(), &member(&name, &id)].concat(),
            None => match &filter.name {
                Some(name) => [b"[".as_slice(), name.as_bytes(), b"\0"].concat(),
                None => b"-".to_vec(),
            },
        };
        // One service's members all sort before `name \x01`.
        let end = match &filter.name {
            Some(name) => [b"(".as_slice(), name.as_bytes(), b"\x01"].concat(),
            None => b"+".to_vec(),
        };
        let chunk = (limit + 1).clamp(1, PAGE_CHUNK);
        let now = self.clock.now();
        let mut page = ServicePage::default();
        for _ in 0..PAGE_CHUNKS {
            let count = chunk.to_string();
            let value = self
                .run_bytes(&self.scripts.page, &[&start, &end, count.as_bytes()])
                .await?;
            let rows: Vec<(Vec<u8>, String, String)> = redis::from_redis_value(value)?;
            let read = rows.len();
            for (listed, json, state) in rows {
                start = [b"(".as_slice(), &listed].concat();
                if json.is_empty() || state.is_empty() {
                    continue;
                }
                let instance = rebuild(&json, &state, now)?;
                if !filter.matches(&instance) {
                    continue;
                }
                if page.instances.len() == limit {
                    page.next = page.instances.last().map(|i| page_cursor(&i.name, &i.id));
                    return Ok(page);
                }
                page.instances.push(instance);
            }
            if read < chunk {
                return Ok(page);
            }
        }
        // Read as much as one page may: the rest is for the next one, from here.
        let position = &start[1..];
        let split = position
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(position.len());
        page.next = Some(page_cursor(
            &String::from_utf8_lossy(&position[..split]),
            &String::from_utf8_lossy(position.get(split + 1..).unwrap_or_default()),
        ));
        Ok(page)
    }

    async fn service(&self, name: &str) -> Result<ServiceInstances> {
        let value = self.run(&self.scripts.service, &[name]).await?;
        let mut fields: Vec<String> = redis::from_redis_value(value)?;
        if fields.is_empty() {
            return Err(Error::Backend("the service script answered nothing".into()));
        }
        let index = fields.remove(0).parse().unwrap_or(0);
        let now = self.clock.now();
        let instances = fields
            .chunks_exact(2)
            .map(|pair| rebuild(&pair[0], &pair[1], now))
            .collect::<Result<Vec<_>>>()?;
        Ok(ServiceInstances { instances, index })
    }

    async fn list(&self, filter: &ServiceFilter) -> Result<Vec<ServiceInstance>> {
        if let Some(name) = &filter.name {
            let mut found = self.service(name).await?.instances;
            found.retain(|i| filter.matches(i));
            return Ok(found);
        }
        let (instances, states): (HashMap<String, String>, HashMap<String, String>) = self
            .store
            .retry(|mut conn| {
                let mut pipe = redis::pipe();
                pipe.atomic().hgetall(&self.keys[0]).hgetall(&self.keys[1]);
                async move { pipe.query_async(&mut conn).await }
            })
            .await?;
        let now = self.clock.now();
        let mut found = Vec::with_capacity(instances.len());
        for (id, json) in &instances {
            let Some(state) = states.get(id) else {
                continue;
            };
            let instance = rebuild(json, state, now)?;
            if filter.matches(&instance) {
                found.push(instance);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
        Ok(found)
    }

    async fn set_health(&self, id: &str, status: HealthStatus) -> Result<ServiceInstance> {
        let value = self
            .run(&self.scripts.set_health, &[id, status.as_str()])
            .await?;
        let (_, json, state, _) =
            Self::outcome(value)?.ok_or_else(|| Error::not_found("service", id))?;
        rebuild(&json, &state, self.clock.now())
    }

    async fn reap(&self) -> Result<Vec<RegistryChange>> {
        let now = self.clock.now();
        let grace_ms = (self.options.grace.as_millis() as i64).to_string();
        let limit = REAP_BATCH.to_string();
        let value = self.run(&self.scripts.reap, &[&grace_ms, &limit]).await?;
        let rows: Vec<(String, String, String, String)> = redis::from_redis_value(value)?;
        let mut changes = Vec::with_capacity(rows.len());
        for (kind, json, state, previous) in rows {
            if let Some(change) = self.change(&kind, &json, &state, &previous, now)? {
                changes.push(change);
            }
        }
        Ok(changes)
    }

    fn watch(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }
}
