-- The first step of a fetch of a consumer of the Redis event bus (see `fetch.rs`):
-- notes how the bus clock stands to Redis time, takes over deliveries whose visibility
-- timeout ran out (when asked to look), and takes the first new entry of the most urgent
-- stream that has one; the consumer reads the rest of that stream's batch with a plain
-- XREADGROUP, which costs Redis a fraction of reading it here.
--
-- Deliveries keep the time Redis gave them. To measure the visibility timeout on the bus
-- clock, each consumer's clock offset from Redis time is logged in the group's hash (field:
-- the consumer, value: '{redis ms}:{offset ms}' pairs, oldest first, the newest 16), a
-- new pair whenever the offset moved by more than the tolerance: a delivery its
-- owner took at Redis time S was made at clock time S plus the owner's offset in effect at
-- S. The script answers the Redis time it checked at and the offset in effect; a consumer
-- reads without it (plain reads, see `fetch.rs`) only while its own estimate of its
-- offset, from that answer and its monotonic clock, stays within half the tolerance of
-- the logged one and the answer is recent. So every delivery is covered.
--
-- KEYS: the four priority streams (most urgent first), the dead-letter list, the stats
-- hash, the group's clock offsets.
-- ARGV: group, consumer, clock now (ms), visibility timeout (ms), most deliveries, most
-- events to take, most dead letters, accepted types, tags and sources (one per line, ''
-- for any), most stat types, '1' to look for expired deliveries, offset tolerance (ms).
-- Answers {{id, event JSON, deliveries}...}; per stream, the last entry id read ('' when
-- none), or its newest entry id when nothing was taken at all; 1 when expired deliveries
-- may be left to take (0 when it looked at them all and found none); the stream to read
-- on (1-4, 0 for none); the Redis time (ms) of the offset check; and the offset in effect.
local DEAD, STATS, CLOCK = KEYS[5], KEYS[6], KEYS[7]
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local NOW, VIS, MAXD = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local COUNT, DEADMAX = tonumber(ARGV[6]), tonumber(ARGV[7])
local TYPES, TAGS, SOURCES, MAXSTAT = ARGV[8], ARGV[9], ARGV[10], tonumber(ARGV[11])
local CLAIM, TOL = ARGV[12] == '1', tonumber(ARGV[13])
local ANY = TYPES == '' and TAGS == '' and SOURCES == ''
local PAIRS = 16

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A consumer's offset log as two lists, oldest first.
local function parse(log)
  local starts, offsets = {}, {}
  for s, o in string.gmatch(log or '', '(-?%d+):(-?%d+)') do
    starts[#starts + 1], offsets[#offsets + 1] = tonumber(s), tonumber(o)
  end
  return starts, offsets
end
local server = now_ms()
local offset = NOW - server
local log = redis.call('HGET', CLOCK, CONSUMER)
local last_start, last_offset = string.match(log or '', '(-?%d+):(-?%d+)$')
local logged = tonumber(last_offset)
if not logged or math.abs(logged - offset) > TOL then
  -- The new offset holds from the next millisecond on: every delivery made with the old
  -- one was made by now, and every later one is made after the wait.
  local before = server
  repeat server = now_ms() until server ~= before
  offset = NOW - server
  if tonumber(last_start or 0) >= server then
    -- Redis time went back: start the log afresh.
    log = ''
  end
  local starts, offsets = parse(log)
  starts[#starts + 1], offsets[#offsets + 1] = server, offset
  local kept = {}
  for j = math.max(1, #starts - PAIRS + 1), #starts do
    kept[#kept + 1] = string.format('%d:%d', starts[j], offsets[j])
  end
  redis.call('HSET', CLOCK, CONSUMER, table.concat(kept, ' '))
  logged = offset
end

-- Counters are added up here and written once per field at the end.
local counts = {}
local function stat(kind, etype)
  local field = kind .. '|' .. etype
  counts[field] = (counts[field] or 0) + 1
end
local function flush()
  local full = next(counts) ~= nil and redis.call('HLEN', STATS) >= MAXSTAT * 4
  for field, n in pairs(counts) do
    if full and redis.call('HEXISTS', STATS, field) == 0 then
      field = string.match(field, '^[^|]*') .. '|_other'
    end
    redis.call('HINCRBY', STATS, field, n)
  end
end
-- An entry's fields: `e` (the event JSON), read here for the type, target, source and
-- tags (the script reads few entries: the first new one of a fetch and expired ones).
local function text(v)
  if type(v) == 'string' then return v end
  return ''
end
local function fields(flat)
  local body = ''
  for i = 1, #flat, 2 do
    if flat[i] == 'e' then body = flat[i + 1] end
  end
  local ok, ev = pcall(cjson.decode, body)
  if not ok or type(ev) ~= 'table' then
    return {e = body, t = '', r = '', s = '', g = ''}
  end
  local tags = {}
  if type(ev.tags) == 'table' then
    for _, tag in ipairs(ev.tags) do tags[#tags + 1] = text(tag) end
  end
  return {e = body, t = text(ev.type), r = text(ev.target), s = text(ev.source),
    g = table.concat(tags, '\n')}
end
local function listed(list, value)
  return list == '' or string.find('\n' .. list .. '\n', '\n' .. value .. '\n', 1, true) ~= nil
end
local function wanted(f)
  if f.r ~= '' and f.r ~= GROUP then return false end
  if ANY then return true end
  if not listed(TYPES, f.t) or not listed(SOURCES, f.s) then return false end
  if TAGS == '' then return true end
  for tag in string.gmatch(f.g, '[^\n]+') do
    if listed(TAGS, tag) then return true end
  end
  return false
end
local function park(id, f, deliveries, reason)
  redis.call('LPUSH', DEAD, cjson.encode({eventId = id, event = f and f.e or '', group = GROUP,
    deliveries = deliveries, reason = reason, at = NOW}))
  redis.call('LTRIM', DEAD, 0, DEADMAX - 1)
  if f then stat('dead', f.t) end
end

local out = {}
-- The last entry read from each stream ('' when none): everything up to it has been
-- handed out to the group.
local tails = {'', '', '', ''}
-- Whether expired deliveries may be left: this look took some, or did not see them all.
local left = 0
if CLAIM then
  -- Every consumer's offset log, and the least offset of all.
  local logs, least = {}, offset
  local flat = redis.call('HGETALL', CLOCK)
  for j = 1, #flat, 2 do
    local starts, offsets = parse(flat[j + 1])
    logs[flat[j]] = {starts, offsets}
    for _, o in ipairs(offsets) do
      if o < least then least = o end
    end
  end
  -- The clock time at which `owner` took a delivery at Redis time `s` (with the current
  -- offset when the owner logged none, as for deliveries from before offsets were kept).
  local function clock_at(owner, s)
    local entry = logs[owner]
    local o = offset
    if entry then
      local starts, offsets = entry[1], entry[2]
      o = offsets[1] or offset
      for j = 1, #starts do
        if starts[j] > s then break end
        o = offsets[j]
      end
    end
    return s + o
  end
  -- No delivery can be due before it was pending this long in Redis time.
  local floor = math.max(VIS + TOL - (offset - least), 0)
  for i = 1, 4 do
    local start, pages = '-', 0
    while #out < COUNT do
      local want = COUNT - #out
      -- Redis time to go with the idle times: the same millisecond before and after.
      local page, before, at
      repeat
        before = now_ms()
        page = redis.call('XPENDING', KEYS[i], GROUP, 'IDLE', floor, start, '+', want)
        at = now_ms()
      until at == before
      local due, seen = {}, {}
      for _, p in ipairs(page) do
        if NOW - clock_at(p[2], at - p[3]) >= VIS + TOL then
          due[#due + 1], seen[p[1]] = p[1], p[4]
        end
        start = '(' .. p[1]
      end
      if #due > 0 then
        left = 1
        local taken = {}
        for _, entry in ipairs(redis.call('XCLAIM', KEYS[i], GROUP, CONSUMER, 0, unpack(due))) do
          local id, f = entry[1], type(entry[2]) == 'table' and fields(entry[2])
          local n = seen[id] + 1
          taken[id] = true
          if not f then
            redis.call('XACK', KEYS[i], GROUP, id)
            park(id, nil, 0, 'trimmed from the backlog before it was acknowledged')
          elseif n > MAXD then
            redis.call('XACK', KEYS[i], GROUP, id)
            park(id, f, n - 1, 'not acknowledged after ' .. (n - 1) .. ' deliveries')
          elseif not wanted(f) then
            redis.call('XACK', KEYS[i], GROUP, id)
          else
            stat('redelivered', f.t)
            out[#out + 1] = {id, f.e, n}
          end
        end
        for _, id in ipairs(due) do
          -- XCLAIM drops what the stream no longer holds from the pending list.
          if not taken[id] then
            park(id, nil, 0, 'trimmed from the backlog before it was acknowledged')
          end
        end
      end
      pages = pages + 1
      if #page < want then break end
      if pages >= 4 then left = 1; break end
    end
    if #out >= COUNT then left = 1; break end
  end
end

-- The first new entry of the most urgent stream that has one.
local more = 0
if #out < COUNT then
  for i = 1, 4 do
    local r = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', 1,
      'STREAMS', KEYS[i], '>')
    local entry = r and r[1] and r[1][2][1]
    if entry then
      local f = fields(entry[2])
      tails[i], more = entry[1], i
      if wanted(f) then
        stat('delivered', f.t)
        out[#out + 1] = {entry[1], f.e, 1}
      else
        redis.call('XACK', KEYS[i], GROUP, entry[1])
      end
      break
    end
  end
end
flush()
if #out == 0 then
  for i = 1, 4 do
    if tails[i] == '' then
      local last = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
      tails[i] = last[1] and last[1][1] or '0-0'
    end
  end
end
return {out, tails, left, more, server, logged}
