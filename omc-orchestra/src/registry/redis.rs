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
//! | `{prefix}:reg:{registry}:svc:~indexed-2` | string | set once every instance stored before the service sets and the listing indexes is indexed |
//! | `{prefix}:reg:{registry}:all` | zset | every instance as `name \0 id`, score 0: the listing index, read in pages by `ZRANGEBYLEX` |
//! | `{prefix}:reg:{registry}:tag:{tag}` | zset | the instances carrying one tag, as in `all`: a listing by tag reads these alone |
//! | `{prefix}:reg:{registry}:type:{type}` | zset | the instances of one type, as in `all` |
//! | `{prefix}:reg:{registry}:status:{status}` | zset | the instances by *stored* status (the last health verdict, or `critical` once stale cleanup marked the heartbeat expired), as in `all` |
//! | `{prefix}:reg:{registry}:ver` | hash | service name → its change index, bumped with every change announced |
//!
//! Every change is one Lua script that also appends to the change stream, so a watcher on
//! any replica sees every replica's changes, and stale cleanup run by several replicas at
//! once removes (and announces) each instance exactly once.
//!
//! Listing reads one index in (name, id) order, the one the filter names that is likely
//! the smallest (a tag, then a status other than passing, then a type, then a passing
//! status, else `all`; a name narrows whichever it is to that service's range), and
//! checks the rest of the filter on each instance read. Tags and type change
//! only when an instance registers again, so their indexes cost nothing on heartbeats.
//! The effective status also changes by time alone: a heartbeat lapses with no script
//! running. The status index therefore holds the stored status, which moves only when a
//! verdict changes, stale cleanup marks an instance, or a heartbeat revives a marked one,
//! so a heartbeat adds one comparison and no write. The instances whose heartbeat lapsed
//! before stale cleanup marked them are effectively `critical` while stored otherwise;
//! a `critical` listing adds them from the `deadline` zset, where they are the range
//! before now (as many as lapsed since the last cleanup pass and the grace period's
//! expired ones), and every listing drops the instances whose effective status no
//! longer matches.

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
use std::collections::{HashMap, VecDeque};

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
local TAG, TYPE, STATUS = KEYS[9], KEYS[10], KEYS[11]
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
-- The status the status index holds: what changes only when a script runs.
local function stored(s)
  if s.expired == "1" then return "critical" end
  return s.check
end
-- Add `member` to (or remove it from, with `op` ZREM) the tag and type indexes of the
-- instance stored as `json`.
local function facets(op, member, json)
  if not json then return end
  local ok, inst = pcall(cjson.decode, json)
  if not ok or type(inst) ~= 'table' then return end
  if type(inst.tags) == 'table' then
    for _, tag in ipairs(inst.tags) do
      if type(tag) == 'string' then
        if op == 'ZADD' then redis.call('ZADD', TAG .. tag, 0, member)
        else redis.call('ZREM', TAG .. tag, member) end
      end
    end
  end
  if type(inst['type']) == 'string' then
    if op == 'ZADD' then redis.call('ZADD', TYPE .. inst['type'], 0, member)
    else redis.call('ZREM', TYPE .. inst['type'], member) end
  end
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
  local member = listed(s.addr, id)
  redis.call('ZREM', ALL, member)
  redis.call('ZREM', STATUS .. stored(s), member)
  facets('ZREM', member, json)
  if redis.call('HGET', ADDR, s.addr) == id then redis.call('HDEL', ADDR, s.addr) end
  return json, st, s
end
-- Apply `change` to an instance's state; announce a change of effective status.
local function update(id, change)
  local st = redis.call('HGET', STATE, id)
  if not st then return false end
  local s = parse(st)
  local prev, before = effective(s), stored(s)
  change(s)
  if stored(s) ~= before then
    local member = listed(s.addr, id)
    redis.call('ZREM', STATUS .. before, member)
    redis.call('ZADD', STATUS .. stored(s), 0, member)
  end
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
  local member = listed(p.addr, id)
  redis.call('ZREM', ALL, member)
  redis.call('ZREM', STATUS .. stored(p), member)
  facets('ZREM', member, redis.call('HGET', INST, id))
  -- Moved to another service: it left the one it was in.
  if service_of(p.addr) ~= service_of(addr) then
    emit('deregistered', redis.call('HGET', INST, id), prevst, prev)
  end
end
redis.call('SADD', SVC .. service_of(addr), id)
local member = listed(addr, id)
redis.call('ZADD', ALL, 0, member)
redis.call('ZADD', STATUS .. 'passing', 0, member)
facets('ZADD', member, json)
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
      if prev ~= 'critical' then
        redis.call('ZREM', STATUS .. prev, listed(s.addr, id))
        redis.call('ZADD', STATUS .. 'critical', 0, listed(s.addr, id))
      end
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

/// Up to ARGV[5] members of the listing index ARGV[6] (`all`, or `tag`, `type` or
/// `status` with the value ARGV[7]) between the bounds ARGV[3] and ARGV[4]
/// (`ZRANGEBYLEX`), each with its instance's JSON and state (empty when gone).
const PAGE: &str = r#"
local out = {}
local index = ALL
if ARGV[6] == 'tag' then index = TAG .. ARGV[7]
elseif ARGV[6] == 'type' then index = TYPE .. ARGV[7]
elseif ARGV[6] == 'status' then index = STATUS .. ARGV[7] end
local members = redis.call('ZRANGEBYLEX', index, ARGV[3], ARGV[4], 'LIMIT', 0, tonumber(ARGV[5]))
for _, member in ipairs(members) do
  local id = string.match(member, "%z(.*)$")
  out[#out + 1] = member
  out[#out + 1] = redis.call('HGET', INST, id) or ''
  out[#out + 1] = redis.call('HGET', STATE, id) or ''
end
return out
"#;

/// The instances whose heartbeat lapsed (deadline before now) while their stored status
/// is not `critical`: effectively critical, not yet in that status index. Each as its
/// listing member, JSON and state.
const LAPSED: &str = r#"
local out = {}
local ids = redis.call('ZRANGEBYSCORE', DEADLINE, '-inf', '(' .. string.format("%d", NOW))
for _, id in ipairs(ids) do
  local st = redis.call('HGET', STATE, id)
  local json = redis.call('HGET', INST, id)
  if st and json then
    local s = parse(st)
    if stored(s) ~= 'critical' then
      out[#out + 1] = listed(s.addr, id)
      out[#out + 1] = json
      out[#out + 1] = st
    end
  end
end
return out
"#;

/// Index every instance once: what a version without the service sets or the listing
/// indexes stored is found by discovery and listing after an upgrade.
const INDEX_SERVICES: &str = r#"
if redis.call('SET', SVC .. '~indexed-2', '1', 'NX') == false then return 0 end
redis.call('DEL', SVC .. '~indexed')
local states = redis.call('HGETALL', STATE)
for i = 1, #states, 2 do
  local id, s = states[i], parse(states[i + 1])
  local member = listed(s.addr, id)
  redis.call('SADD', SVC .. service_of(s.addr), id)
  redis.call('ZADD', ALL, 0, member)
  redis.call('ZADD', STATUS .. stored(s), 0, member)
  facets('ZADD', member, redis.call('HGET', INST, id))
end
return #states / 2
"#;

struct Scripts {
    page: Script,
    lapsed: Script,
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
            lapsed: with_prelude(LAPSED),
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

/// A lapsed instance: its listing member, JSON and state.
type Lapsed = (Vec<u8>, String, String);

/// A script's answer: `{kind, json, state, previous}`, or nil when the id is unknown.
type Outcome = Option<(String, String, String, String)>;

/// A registry kept in Redis, shared by every server that points at the same Redis and
/// prefix.
pub struct RedisRegistry {
    store: RedisStore,
    keys: [String; 11],
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
            "inst", "state", "deadline", "addr", "changes", "svc:", "ver", "all", "tag:", "type:",
            "status:",
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

    /// The instances effectively critical by a lapsed heartbeat but not yet in the
    /// `critical` status index, within the listing bounds, in listing order.
    async fn lapsed(&self, start: &[u8], end: &[u8]) -> Result<VecDeque<Lapsed>> {
        let value = self.run_bytes(&self.scripts.lapsed, &[]).await?;
        let mut rows: Vec<Lapsed> = redis::from_redis_value(value)?;
        rows.retain(|(member, _, _)| within(member, start, end));
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows.into())
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

/// The listing index a filter reads, as the page script names it (`all`, `tag`, `type`,
/// `status`) with its value: the one likely to hold the fewest instances. A tag is the
/// narrowest facet; a status other than passing is rare in a healthy registry; types
/// are few, so each holds many instances; most instances are passing.
fn listing_index(filter: &ServiceFilter) -> (&'static str, &str) {
    if let Some(tag) = &filter.tag {
        return ("tag", tag);
    }
    match (filter.status, &filter.service_type) {
        (Some(status), _) if status != HealthStatus::Passing => ("status", status.as_str()),
        (_, Some(service_type)) => ("type", service_type),
        (Some(status), None) => ("status", status.as_str()),
        (None, None) => ("all", ""),
    }
}

/// Add `instance` to `page` when it passes `filter`; true once the page is complete (an
/// instance past a full page sets where the next one starts).
fn offer(
    page: &mut ServicePage,
    filter: &ServiceFilter,
    limit: usize,
    instance: ServiceInstance,
) -> bool {
    if !filter.matches(&instance) {
        return false;
    }
    if page.instances.len() == limit {
        page.next = page.instances.last().map(|i| page_cursor(&i.name, &i.id));
        return true;
    }
    page.instances.push(instance);
    false
}

/// Whether the listing member `member` lies within the `ZRANGEBYLEX` bounds `start`
/// (`-`, `[x` or `(x`) and `end` (`+` or `(x`).
fn within(member: &[u8], start: &[u8], end: &[u8]) -> bool {
    let after = match start.split_first() {
        Some((b'[', from)) => member >= from,
        Some((b'(', from)) => member > from,
        _ => true,
    };
    let before = match end.split_first() {
        Some((b'(', to)) => member < to,
        _ => true,
    };
    after && before
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
        let (index, value) = listing_index(filter);
        let mut lapsed = if (index, value) == ("status", HealthStatus::Critical.as_str()) {
            self.lapsed(&start, &end).await?
        } else {
            VecDeque::new()
        };
        let chunk = (limit + 1).clamp(1, PAGE_CHUNK);
        let now = self.clock.now();
        let mut page = ServicePage::default();
        for _ in 0..PAGE_CHUNKS {
            let count = chunk.to_string();
            let args = [
                start.as_slice(),
                &end,
                count.as_bytes(),
                index.as_bytes(),
                value.as_bytes(),
            ];
            let value = self.run_bytes(&self.scripts.page, &args).await?;
            let rows: Vec<(Vec<u8>, String, String)> = redis::from_redis_value(value)?;
            let read = rows.len();
            for (listed, json, state) in rows {
                while lapsed.front().is_some_and(|l| l.0 < listed) {
                    let Some((_, json, state)) = lapsed.pop_front() else {
                        break;
                    };
                    if offer(&mut page, filter, limit, rebuild(&json, &state, now)?) {
                        return Ok(page);
                    }
                }
                start = [b"(".as_slice(), &listed].concat();
                if json.is_empty() || state.is_empty() {
                    continue;
                }
                if offer(&mut page, filter, limit, rebuild(&json, &state, now)?) {
                    return Ok(page);
                }
            }
            if read < chunk {
                for (_, json, state) in lapsed {
                    if offer(&mut page, filter, limit, rebuild(&json, &state, now)?) {
                        break;
                    }
                }
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
        if listing_index(filter).0 != "all" {
            // Page through the filter's index rather than read every instance.
            let mut found = Vec::new();
            let mut cursor = None;
            loop {
                let page = self
                    .list_page(filter, PAGE_CHUNK, cursor.as_deref())
                    .await?;
                found.extend(page.instances);
                match page.next {
                    Some(next) => cursor = Some(next),
                    None => return Ok(found),
                }
            }
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
