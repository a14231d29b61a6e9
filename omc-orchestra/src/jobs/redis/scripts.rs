//! The Lua scripts of the Redis job queue: one per transition.
//!
//! Every script gets the same nine keys and seven leading arguments (see `PRELUDE`); a
//! job's own hash key is `ARGV[2] .. id`, under the same hash tag as the declared keys.
//! The first argument is the time, or '' for Redis's own (`TIME`).

use redis::Script;

/// Every script, loaded once per queue handle.
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) fetch: Script,
    pub(super) complete: Script,
    pub(super) complete_many: Script,
    pub(super) fail: Script,
    pub(super) extend: Script,
    pub(super) release: Script,
    pub(super) cancel: Script,
    pub(super) maintain: Script,
    pub(super) retry_failed: Script,
    pub(super) retry: Script,
    pub(super) fire: Script,
    pub(super) stats: Script,
    pub(super) list: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Self {
            enqueue: s(&ENQUEUE.replace(
                "RESEND_WINDOW_MS",
                &crate::backend::RESEND_WINDOW.as_millis().to_string(),
            )),
            fetch: s(FETCH),
            complete: s(COMPLETE),
            complete_many: s(COMPLETE_MANY),
            fail: s(FAIL),
            extend: s(EXTEND),
            release: s(RELEASE),
            cancel: s(CANCEL),
            maintain: s(MAINTAIN),
            retry_failed: s(RETRY_FAILED),
            retry: s(RETRY),
            fire: s(FIRE),
            stats: s(STATS),
            list: s(LIST),
        }
    }
}

pub(super) const PRELUDE: &str = r#"
local WAIT, DELAYED, ACTIVE, COMPLETED, FAILED = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local UNIQUE, SEQ, SCHED, SCHEDLAST = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
-- The time (ms): Redis's own unless the caller's clock is one a test drives (ARGV[1]),
-- so every worker measures leases and delays on the same clock however its host's runs.
local NOW = tonumber(ARGV[1])
if not NOW then
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOWS = string.format("%d", NOW)
local JB, MB = ARGV[2], ARGV[3]
local KEEPC, AGEC, KEEPF, AGEF = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local MAXBACKOFF = 86400000
-- What a fetch reads of each job; the rest of a leased job the caller knows already.
local TAKEN = {'type', 'j', 'rp', 'att', 'ra', 'pg', 'er', 'cx', 'fa'}
local function jk(id) return JB .. id end
local function fmt(n) return string.format("%d", n) end
-- One command over a long list of arguments, in chunks Lua can unpack.
local function chunked(cmd, key, list)
  for i = 1, #list, 500 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 499, #list)))
  end
end
-- The retry policy of a job: most attempts, backoff kind, delay (ms) and jitter.
local function policy(k)
  local m, kind, delay, jitter = string.match(redis.call('HGET', k, 'rp') or '',
    '^(%d+) (%a+) (%d+) (%S+)$')
  return tonumber(m) or 1, kind, tonumber(delay) or 0, tonumber(jitter) or 0
end
local pending_figures = {}
local function bucket(field, by)
  pending_figures[field] = (pending_figures[field] or 0) + by
end
local function flush()
  local k = MB .. fmt(math.floor(NOW / 60000))
  for field, by in pairs(pending_figures) do
    if redis.call('HINCRBY', k, field, by) == by then redis.call('EXPIRE', k, 3660) end
  end
  pending_figures = {}
end
-- The waiting ids of one type, scored as in WAIT: what a typed fetch reads instead of
-- scanning WAIT past every job of other types.
local function tw(jtype) return WAIT .. ':' .. jtype end
local function ready(id)
  local k = jk(id)
  if redis.call('EXISTS', k) == 0 then return end
  redis.call('HSET', k, 'state', 'waiting')
  local h = redis.call('HMGET', k, 'sc', 'type')
  redis.call('ZADD', WAIT, h[1], id)
  if h[2] then redis.call('ZADD', tw(h[2]), h[1], id) end
end
-- Take ids out of WAIT and out of their types' sets; `by_type` maps a type to its ids.
local function unwait(ids, by_type)
  chunked('ZREM', WAIT, ids)
  for jtype, tids in pairs(by_type) do chunked('ZREM', tw(jtype), tids) end
end
local function unlock(id, k)
  local uk = redis.call('HGET', k, 'uk')
  if uk and redis.call('HGET', UNIQUE, uk) == id then redis.call('HDEL', UNIQUE, uk) end
end
local function drop(set, ids)
  for _, id in ipairs(ids) do redis.call('DEL', jk(id)) end
  if #ids > 0 then redis.call('ZREM', set, unpack(ids)) end
  return #ids
end
local function trim(set, keep, age)
  local n = drop(set, redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. fmt(NOW - age), 'LIMIT', 0, 1000))
  local extra = redis.call('ZCARD', set) - keep
  if extra > 0 then
    if extra > 1000 then extra = 1000 end
    n = n + drop(set, redis.call('ZRANGE', set, 0, extra - 1))
  end
  return n
end
local function finish(id, k, state)
  redis.call('HSET', k, 'state', state, 'fi', fmt(NOW), 'tok', '')
  unlock(id, k)
  if state == 'completed' then redis.call('ZADD', COMPLETED, NOW, id)
  else redis.call('ZADD', FAILED, NOW, id) end
end
-- A job's key and its state (nil when the job is gone).
local function job_state(id)
  local k = jk(id)
  return k, redis.call('HGET', k, 'state')
end
-- A failed job back to waiting, with its attempts and finish time reset.
local function retry_fresh(id, k)
  redis.call('HSET', k, 'att', 0)
  redis.call('HDEL', k, 'fi')
  ready(id)
end
local function trim_all()
  return trim(COMPLETED, KEEPC, AGEC) + trim(FAILED, KEEPF, AGEF)
end
local function maintain(limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', NOW, 'LIMIT', 0, limit)
  if #due > 0 then redis.call('ZREM', DELAYED, unpack(due)) end
  for _, id in ipairs(due) do ready(id) end
  local stalled = redis.call('ZRANGEBYSCORE', ACTIVE, '-inf', NOW, 'LIMIT', 0, limit)
  if #stalled > 0 then redis.call('ZREM', ACTIVE, unpack(stalled)) end
  for _, id in ipairs(stalled) do
    local k = jk(id)
    if redis.call('EXISTS', k) == 1 then
      redis.call('HSET', k, 'tok', '')
      if tonumber(redis.call('HGET', k, 'att')) >= policy(k) then
        redis.call('HSET', k, 'er', 'lease expired: the worker stalled or died')
        finish(id, k, 'failed')
      else
        ready(id)
      end
    end
  end
  return #due, stalled
end
-- What a fetch cannot lease because the script itself cannot read it: the field at
-- fault, or nil. The caller reads the rest, and fails alone a job it cannot read
-- (FAIL with ARGV[12] = 1).
local function unreadable(row)
  if not row[1] then return 'type' end
  if not tonumber(row[4]) then return 'att' end
  if not tonumber(row[5]) then return 'ra' end
  return nil
end
-- Fail a job for good because its stored hash cannot be read.
local function bury(id, k, field)
  redis.call('HSET', k, 'er', 'cannot read the stored job: malformed job field `' .. field
    .. '` in Redis')
  finish(id, k, 'failed')
  bucket('f', 1)
end
-- Until the type sets hold every waiting job (`index_step` has gone through WAIT once),
-- a typed fetch also scans the first 1000 of WAIT, as before the type sets, for jobs
-- queued by an older version.
local function indexed()
  return redis.call('GET', WAIT .. 'idx') == 'done'
end
-- Index the next `limit` entries of WAIT (by score, after the cursor) in their types'
-- sets; once through, mark the cursor done.
local function index_step(limit)
  local cursor = redis.call('GET', WAIT .. 'idx')
  if cursor == 'done' then return end
  local from = '-inf'
  if cursor then from = '(' .. cursor end
  local page = redis.call('ZRANGEBYSCORE', WAIT, from, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  for i = 1, #page, 2 do
    local jtype = redis.call('HGET', jk(page[i]), 'type')
    if jtype then redis.call('ZADD', tw(jtype), page[i + 1], page[i]) end
  end
  if #page < 2 * limit then redis.call('SET', WAIT .. 'idx', 'done')
  else redis.call('SET', WAIT .. 'idx', page[#page]) end
end
-- The first `max` waiting ids of `types` (a list without repeats) in WAIT's order, as
-- {score, id} pairs: the first `max` of each type's set, merged. An id a type set holds
-- but WAIT does not (left by an older version) is dropped from the type set.
local function typed_candidates(max, types)
  local found, seen = {}, {}
  local function add(score, id)
    if seen[id] then return end
    seen[id] = true
    found[#found + 1] = {tonumber(score), id}
  end
  for _, jtype in ipairs(types) do
    local key, from, n = tw(jtype), 0, 0
    while n < max do
      local page = redis.call('ZRANGE', key, from, from + max - 1)
      local stale = {}
      for _, id in ipairs(page) do
        local score = redis.call('ZSCORE', WAIT, id)
        if score then
          add(score, id)
          n = n + 1
        else
          stale[#stale + 1] = id
        end
      end
      chunked('ZREM', key, stale)
      if #page < max then break end
      from = from + #page - #stale
    end
  end
  if not indexed() then
    local want = {}
    for _, jtype in ipairs(types) do want[jtype] = true end
    local page = redis.call('ZRANGE', WAIT, 0, 999, 'WITHSCORES')
    local n = 0
    for i = 1, #page, 2 do
      if n >= max then break end
      if want[redis.call('HGET', jk(page[i]), 'type')] then
        add(page[i + 1], page[i])
        n = n + 1
      end
    end
  end
  table.sort(found, function(a, b) return a[1] < b[1] end)
  return found
end
-- Lease up to `max` waiting jobs (of the types from ARGV[first_type] on, if any), in
-- queue order: one HMGET and one HSET per job; the sorted sets change once per call.
-- A typed fetch reads the types' own sets, so what waits ahead of other types costs
-- nothing. Each comes back as its `TAKEN` fields (attempts already counted, '' for a
-- missing one) and its id; its token is `tokbase .. id`, it started now and its lease
-- ends `leasems` from now. The answer is one JSON array of those rows ('' when none):
-- one value to hand back instead of nine per job.
local function take(max, worker, tokbase, leasems, first_type)
  local out = {}
  if max <= 0 then return '' end
  local types
  if first_type <= #ARGV then
    types = {}
    for i = first_type, #ARGV do types[ARGV[i]] = true end
  end
  local lu = fmt(NOW + leasems)
  local gone, gone_by_type, leased, waited, n = {}, {}, {}, 0, 0
  -- Lease `id` if it can be read (and is of the types asked); true once `max` are taken.
  local function consider(id)
    local k = jk(id)
    local row = redis.call('HMGET', k, unpack(TAKEN))
    local bad = unreadable(row)
    if not bad and types and not types[row[1]] then return false end
    gone[#gone + 1] = id
    if row[1] then
      local same = gone_by_type[row[1]]
      if not same then
        same = {}
        gone_by_type[row[1]] = same
      end
      same[#same + 1] = id
    end
    if bad then
      if redis.call('EXISTS', k) == 1 then bury(id, k, bad) end
      return false
    end
    n = n + 1
    local att = fmt(tonumber(row[4]) + 1)
    redis.call('HSET', k, 'att', att, 'state', 'active', 'st', NOWS, 'wk', worker,
      'tok', tokbase .. id)
    row[4] = att
    row[#TAKEN + 1] = id
    for i = 1, #TAKEN do
      if not row[i] then row[i] = '' end
    end
    out[n] = row
    leased[2 * n - 1] = lu
    leased[2 * n] = id
    local wait = NOW - tonumber(row[5])
    if wait > 0 then waited = waited + wait end
    return n >= max
  end
  if types then
    local list = {}
    for jtype in pairs(types) do list[#list + 1] = jtype end
    for _, c in ipairs(typed_candidates(max, list)) do
      if consider(c[2]) then break end
    end
  else
    local from, width = 0, max
    while from < 1000 do
      if from + width > 1000 then width = 1000 - from end
      local ids = redis.call('ZRANGE', WAIT, from, from + width - 1)
      for _, id in ipairs(ids) do
        if consider(id) then break end
      end
      if n >= max or #ids < width then break end
      from = from + width
      width = width * 2
    end
  end
  unwait(gone, gone_by_type)
  chunked('ZADD', ACTIVE, leased)
  if n > 0 then bucket('s', n) end
  if waited > 0 then bucket('w', waited) end
  if n == 0 then return '' end
  return cjson.encode(out)
end
local function held(id, token)
  local k = jk(id)
  local h = redis.call('HMGET', k, 'state', 'tok')
  if not h[1] then return nil, 'missing' end
  if h[1] ~= 'active' or h[2] ~= token then return nil, 'conflict' end
  return k, 'ok'
end
-- Completions so far: ids to take out of ACTIVE, (score, id) pairs for COMPLETED, the
-- sum of their run times.
local done_ids, done_kept, done_run = {}, {}, 0
-- Complete a held job. Kept completed jobs are trimmed later; when none are kept
-- (KEEPC 0) the job goes at once. With `reply`, the job as completed comes back.
local function complete_one(id, token, result, reply)
  local k = jk(id)
  local h = redis.call('HMGET', k, 'state', 'tok', 'st', 'uk')
  if not h[1] then return nil, 'missing' end
  if h[1] ~= 'active' or h[2] ~= token then return nil, 'conflict' end
  done_ids[#done_ids + 1] = id
  if h[4] and redis.call('HGET', UNIQUE, h[4]) == id then redis.call('HDEL', UNIQUE, h[4]) end
  done_run = done_run + NOW - tonumber(h[3])
  local job = true
  if KEEPC > 0 or reply then
    redis.call('HSET', k, 'rs', result, 'state', 'completed', 'fi', NOWS, 'tok', '')
    if reply then job = redis.call('HGETALL', k) end
  end
  if KEEPC > 0 then
    done_kept[#done_kept + 1] = NOWS
    done_kept[#done_kept + 1] = id
  else
    redis.call('DEL', k)
  end
  return job, 'ok'
end
-- Move the completions so far out of ACTIVE (and into COMPLETED): before anything
-- else reads ACTIVE.
local function completed()
  if #done_ids > 0 then
    bucket('c', #done_ids)
    bucket('r', done_run)
  end
  chunked('ZREM', ACTIVE, done_ids)
  chunked('ZADD', COMPLETED, done_kept)
  done_ids, done_kept, done_run = {}, {}, 0
end
-- The sequence, read once per call and written back by `enqueued`.
local seq_at
-- (score, id) pairs for WAIT and DELAYED, and for WAIT's type sets by type, added by
-- `enqueued`.
local to_wait, to_delay, to_wait_typed = {}, {}, {}
local function enqueue(id, a)
  local uk = ARGV[a + 1]
  if uk ~= '' then
    local ex = redis.call('HGET', UNIQUE, uk)
    if ex and redis.call('EXISTS', jk(ex)) == 1 then return ex, false end
  end
  if id ~= '' and redis.call('EXISTS', jk(id)) == 1 then return id, false end
  if not seq_at then
    local last = redis.call('GET', SEQ)
    -- A queue's first job: nothing waits from before the type sets.
    if not last then redis.call('SET', WAIT .. 'idx', 'done') end
    seq_at = tonumber(last or '0')
  end
  seq_at = seq_at + 1
  if id == '' then id = fmt(seq_at) end
  local ra = ARGV[a + 6]
  -- `+ms`: a delay from now, on the script's clock.
  if string.sub(ra, 1, 1) == '+' then ra = fmt(NOW + tonumber(string.sub(ra, 2))) end
  local delayed = tonumber(ra) > NOW
  local state = 'waiting'
  if delayed then state = 'delayed' end
  -- The priority in front of the zero-padded sequence: the wait score.
  local sc = ARGV[a + 3] .. string.format('%013d', seq_at)
  local f = {'state', state, 'att', '0', 'type', ARGV[a + 2], 'j', ARGV[a + 4], 'ra', ra,
    'id', id, 'sc', sc, 'rp', ARGV[a + 5]}
  if uk ~= '' then
    f[17], f[18] = 'uk', uk
    redis.call('HSET', UNIQUE, uk, id)
  end
  redis.call('HSET', jk(id), unpack(f))
  if delayed then
    to_delay[#to_delay + 1] = ra
    to_delay[#to_delay + 1] = id
  else
    to_wait[#to_wait + 1] = sc
    to_wait[#to_wait + 1] = id
    local typed = to_wait_typed[ARGV[a + 2]]
    if not typed then
      typed = {}
      to_wait_typed[ARGV[a + 2]] = typed
    end
    typed[#typed + 1] = sc
    typed[#typed + 1] = id
  end
  return id, true
end
-- Record the sequence and queue the jobs `enqueue` stored.
local function enqueued()
  if seq_at then redis.call('SET', SEQ, fmt(seq_at)) end
  chunked('ZADD', WAIT, to_wait)
  for jtype, pairs_of in pairs(to_wait_typed) do chunked('ZADD', tw(jtype), pairs_of) end
  chunked('ZADD', DELAYED, to_delay)
  to_wait, to_delay, to_wait_typed = {}, {}, {}
end
"#;

/// ARGV[8] n, then n × (id or '', the six job arguments of `enqueue`); KEYS[10] the
/// batch's key (see `Inner::invoke`). Answers, per job, its id when it is new, else the
/// existing job's fields. The answer is kept under the batch's key for a while, as `n`
/// or `o` and the id per job, so a resend of the same batch (after a timeout that left
/// the outcome unknown) stores nothing and answers the same.
pub(super) const ENQUEUE: &str = r#"
local SENT = KEYS[10]
local out = {}
local prior = redis.call('GET', SENT)
if prior then
  for i, mark in ipairs(cjson.decode(prior)) do
    local id = string.sub(mark, 2)
    if string.sub(mark, 1, 1) == 'n' then out[i] = id
    else out[i] = redis.call('HGETALL', jk(id)) end
  end
  return out
end
local marks = {}
for i = 0, tonumber(ARGV[8]) - 1 do
  local id, created = enqueue(ARGV[9 + i * 7], 9 + i * 7)
  if created then
    out[i + 1] = id
    marks[i + 1] = 'n' .. id
  else
    out[i + 1] = redis.call('HGETALL', jk(id))
    marks[i + 1] = 'o' .. id
  end
end
enqueued()
redis.call('SET', SENT, cjson.encode(marks), 'PX', RESEND_WINDOW_MS)
return out
"#;

/// ARGV[8] max, [9] worker, [10] token base, [11] lease ms, [12..] types.
pub(super) const FETCH: &str = r#"
maintain(1000)
local taken = take(tonumber(ARGV[8]), ARGV[9], ARGV[10], tonumber(ARGV[11]), 12)
flush()
return taken
"#;

/// ARGV[8] id, [9] token, [10] result, [11] next max, [12] worker, [13] token base,
/// [14] lease ms, [15..] types.
pub(super) const COMPLETE: &str = r#"
local job, status = complete_one(ARGV[8], ARGV[9], ARGV[10], true)
if not job then return {status} end
completed()
trim_all()
local next = ''
if tonumber(ARGV[11]) > 0 then
  maintain(100)
  next = take(tonumber(ARGV[11]), ARGV[12], ARGV[13], tonumber(ARGV[14]), 15)
end
flush()
return {'ok', job, next}
"#;

/// ARGV[8] n, then n × (id, token, result), then max, worker, token base, lease ms,
/// types. Answers `{statuses, leases}`, the statuses in one string, split by spaces.
pub(super) const COMPLETE_MANY: &str = r#"
local n = tonumber(ARGV[8])
local statuses = {}
for i = 0, n - 1 do
  local b = 9 + i * 3
  local _, status = complete_one(ARGV[b], ARGV[b + 1], ARGV[b + 2], false)
  statuses[i + 1] = status
end
completed()
trim_all()
local f = 9 + n * 3
local next = ''
if tonumber(ARGV[f]) > 0 then
  maintain(100)
  next = take(tonumber(ARGV[f]), ARGV[f + 1], ARGV[f + 2], tonumber(ARGV[f + 3]), f + 4)
end
flush()
return {table.concat(statuses, ' '), next}
"#;

/// ARGV[8] id, [9] token, [10] error, [11] random in [0, 1), [12] `1` to fail for good
/// whatever attempts are left, [13] how many failed attempts a job keeps. The attempt
/// joins the job's `fa` list (oldest first, the newest [13] kept).
pub(super) const FAIL: &str = r#"
local id = ARGV[8]
local k, status = held(id, ARGV[9])
if not k then return {status} end
local h = redis.call('HMGET', k, 'st', 'att', 'wk', 'fa')
local max, kind, base, jitter = policy(k)
redis.call('ZREM', ACTIVE, id)
local fa = {}
if h[4] and h[4] ~= '' then
  local ok, kept = pcall(cjson.decode, h[4])
  if ok and type(kept) == 'table' then fa = kept end
end
fa[#fa + 1] = {a = tonumber(h[2]) or 0, e = ARGV[10], t = NOW, w = h[3] or ''}
while #fa > tonumber(ARGV[13]) do table.remove(fa, 1) end
redis.call('HSET', k, 'er', ARGV[10], 'fa', cjson.encode(fa))
bucket('f', 1)
bucket('r', NOW - tonumber(h[1]))
flush()
local att = tonumber(h[2])
if att >= max or ARGV[12] == '1' then
  finish(id, k, 'failed')
  local job = redis.call('HGETALL', k)
  trim_all()
  return {'ok', job}
end
if kind == 'exponential' then
  local exp = att - 1
  if exp > 40 then exp = 40 end
  base = base * (2 ^ exp)
end
if base > MAXBACKOFF then base = MAXBACKOFF end
local delay = base - math.floor(base * jitter * tonumber(ARGV[11]))
local ra = NOW + delay
redis.call('HSET', k, 'state', 'delayed', 'ra', fmt(ra), 'tok', '')
redis.call('ZADD', DELAYED, ra, id)
return {'ok', redis.call('HGETALL', k)}
"#;

/// ARGV[8] id, [9] token, [10] lease ms or '' (progress only), [11] progress or ''.
/// Answers the lease end, the cancel flag and the script's time.
pub(super) const EXTEND: &str = r#"
local id = ARGV[8]
local k, status = held(id, ARGV[9])
if not k then return {status} end
if ARGV[10] ~= '' then redis.call('ZADD', ACTIVE, fmt(NOW + tonumber(ARGV[10])), id) end
if ARGV[11] ~= '' then redis.call('HSET', k, 'pg', ARGV[11]) end
return {'ok', redis.call('ZSCORE', ACTIVE, id), redis.call('HGET', k, 'cx'), NOWS}
"#;

/// ARGV[8] id, [9] token.
pub(super) const RELEASE: &str = r#"
local id = ARGV[8]
local k, status = held(id, ARGV[9])
if not k then return {status} end
redis.call('ZREM', ACTIVE, id)
redis.call('HINCRBY', k, 'att', -1)
redis.call('HSET', k, 'tok', '')
ready(id)
return {'ok', redis.call('HGETALL', k)}
"#;

/// ARGV[8] id.
pub(super) const CANCEL: &str = r#"
local id = ARGV[8]
local k, state = job_state(id)
if not state then return {'missing'} end
if state == 'active' then
  redis.call('HSET', k, 'cx', '1')
  return {'ok', redis.call('HGETALL', k)}
end
for _, set in ipairs({WAIT, DELAYED, COMPLETED, FAILED}) do redis.call('ZREM', set, id) end
local jtype = redis.call('HGET', k, 'type')
if jtype then redis.call('ZREM', tw(jtype), id) end
unlock(id, k)
local job = redis.call('HGETALL', k)
redis.call('DEL', k)
return {'ok', job}
"#;

/// Also indexes the next 500 waiting jobs queued before the type sets (see `index_step`).
pub(super) const MAINTAIN: &str = r#"
local promoted, stalled = maintain(1000)
index_step(500)
return {promoted, stalled, trim_all()}
"#;

pub(super) const RETRY_FAILED: &str = r#"
local ids = redis.call('ZRANGE', FAILED, 0, 999)
if #ids > 0 then redis.call('ZREM', FAILED, unpack(ids)) end
for _, id in ipairs(ids) do
  local k = jk(id)
  if redis.call('EXISTS', k) == 1 then retry_fresh(id, k) end
end
return #ids
"#;

/// ARGV[8] the id of one failed job, back to waiting with fresh attempts.
pub(super) const RETRY: &str = r#"
local id = ARGV[8]
local k, state = job_state(id)
if not state then return {'missing'} end
if state ~= 'failed' then return {'not_failed'} end
redis.call('ZREM', FAILED, id)
retry_fresh(id, k)
return {'ok', redis.call('HGETALL', k)}
"#;

/// ARGV[8] schedule id, [9] tick ms, [10] job id, [11..16] the job.
pub(super) const FIRE: &str = r#"
local sid, tick = ARGV[8], tonumber(ARGV[9])
if redis.call('HEXISTS', SCHED, sid) == 0 then return {'missing'} end
local last = redis.call('HGET', SCHEDLAST, sid)
if last and tonumber(last) >= tick then return {'skip'} end
redis.call('HSET', SCHEDLAST, sid, ARGV[9])
local id = enqueue(ARGV[10], 10)
enqueued()
return {'ok', redis.call('HGETALL', jk(id))}
"#;

pub(super) const STATS: &str = r#"
local counts = {}
for _, set in ipairs({WAIT, DELAYED, ACTIVE, COMPLETED, FAILED}) do
  table.insert(counts, redis.call('ZCARD', set))
end
for r = 0, 3 do
  table.insert(counts, redis.call('ZCOUNT', WAIT, r * 1e13, '(' .. fmt((r + 1) * 1e13)))
end
local buckets = {}
local current = math.floor(NOW / 60000)
for m = current - 59, current do
  local h = redis.call('HMGET', MB .. fmt(m), 'c', 'f', 's', 'w', 'r')
  if h[1] or h[2] or h[3] then
    table.insert(buckets, {fmt(m), h[1] or '0', h[2] or '0', h[3] or '0', h[4] or '0', h[5] or '0'})
  end
end
return {counts, buckets, NOWS}
"#;

/// ARGV[8] state or '', [9] type or '', [10] offset, [11] limit.
pub(super) const LIST: &str = r#"
local want, jtype = ARGV[8], ARGV[9]
local skip, limit = tonumber(ARGV[10]), tonumber(ARGV[11])
local out = {}
local sets = {{'waiting', WAIT, false}, {'delayed', DELAYED, false}, {'active', ACTIVE, false},
  {'completed', COMPLETED, true}, {'failed', FAILED, true}}
for _, s in ipairs(sets) do
  if want == '' or want == s[1] then
    local ids
    if s[3] then ids = redis.call('ZREVRANGE', s[2], 0, 9999)
    else ids = redis.call('ZRANGE', s[2], 0, 9999) end
    for _, id in ipairs(ids) do
      local k = jk(id)
      if jtype == '' or redis.call('HGET', k, 'type') == jtype then
        if skip > 0 then skip = skip - 1
        else
          table.insert(out, redis.call('HGETALL', k))
          if #out >= limit then return out end
        end
      end
    end
  end
end
return out
"#;
