-- One fetch of a consumer of the Redis event bus (see `redis_consumer.rs`).
--
-- KEYS: the four priority streams (most urgent first), the dead-letter list, the stats hash.
-- ARGV: group, consumer, clock now (ms), visibility timeout (ms), most deliveries, most
-- events to take, most dead letters, stamp shift (ms), accepted types, tags and sources
-- (one per line, '' for any), most stat types, '1' to look for expired deliveries.
-- Answers {{id, event JSON, deliveries}...}; per stream, the last entry id read ('' when
-- none), or its newest entry id when nothing was taken at all; and 1 when expired
-- deliveries may be left to take (0 when it looked at them all and found none).
local DEAD, STATS = KEYS[5], KEYS[6]
local GROUP, CONSUMER = ARGV[1], ARGV[2]
local NOW, VIS, MAXD = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local COUNT, DEADMAX, SHIFT = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local TYPES, TAGS, SOURCES, MAXSTAT = ARGV[9], ARGV[10], ARGV[11], tonumber(ARGV[12])
local CLAIM = ARGV[13] == '1'
local ANY = TYPES == '' and TAGS == '' and SOURCES == ''
local minidle = 1
if CLAIM then
  local t = redis.call('TIME')
  local server = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  minidle = math.max(VIS + server - NOW + SHIFT, 1)
end
local stamp = string.format('%d', NOW - SHIFT)
-- Counters are added up here and written once per field at the end.
local counts, claims = {}, {}
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
  -- Stamp this batch's deliveries with the clock's time (one XCLAIM per stream).
  for i, ids in pairs(claims) do
    table.insert(ids, 'TIME')
    table.insert(ids, stamp)
    table.insert(ids, 'JUSTID')
    redis.call('XCLAIM', KEYS[i], GROUP, CONSUMER, 0, unpack(ids))
  end
end
local function claim(i, id)
  if not claims[i] then claims[i] = {} end
  table.insert(claims[i], id)
end
-- An entry's fields: `m` (type, target, source, then the tags, one per line) and `e` (the
-- event JSON); entries written before `m` existed carry `e`, `t`, `s`, `r` and `g`.
local function fields(flat)
  if flat[1] == 'm' then
    local t, r, s, g = string.match(flat[2], '^([^\n]*)\n([^\n]*)\n([^\n]*)\n?(.*)$')
    return {e = flat[4], t = t or '', r = r or '', s = s or '', g = g or ''}
  end
  local f = {}
  for i = 1, #flat, 2 do f[flat[i]] = flat[i + 1] end
  return f
end
local function listed(list, value)
  return list == '' or string.find('\n' .. list .. '\n', '\n' .. value .. '\n', 1, true) ~= nil
end
local function wanted(f)
  if f.r ~= '' and f.r ~= GROUP then return false end
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
for i = 1, CLAIM and 4 or 0 do
  if #out >= COUNT then left = 1; break end
  local claimed = redis.call('XAUTOCLAIM', KEYS[i], GROUP, CONSUMER, minidle, '0-0',
    'COUNT', COUNT - #out)
  if claimed[1] ~= '0-0' or #claimed[2] > 0 or #(claimed[3] or {}) > 0 then left = 1 end
  for _, entry in ipairs(claimed[2]) do
    local id = entry[1]
    if type(entry[2]) == 'table' then
      local f = fields(entry[2])
      local pending = redis.call('XPENDING', KEYS[i], GROUP, id, id, 1)
      local n = tonumber(pending[1][4])
      if n > MAXD then
        redis.call('XACK', KEYS[i], GROUP, id)
        park(id, f, n - 1, 'not acknowledged after ' .. (n - 1) .. ' deliveries')
      else
        claim(i, id)
        stat('redelivered', f.t)
        table.insert(out, {id, f.e, n})
      end
    end
  end
  for _, id in ipairs(claimed[3] or {}) do
    park(id, nil, 0, 'trimmed from the backlog before it was acknowledged')
  end
end
for i = 1, 4 do
  local more = true
  while more and #out < COUNT do
    local want = COUNT - #out
    local r = redis.call('XREADGROUP', 'GROUP', GROUP, CONSUMER, 'COUNT', want,
      'STREAMS', KEYS[i], '>')
    if not r or not r[1] then break end
    local entries = r[1][2]
    -- Fewer than asked for: the stream has nothing more for now.
    more = #entries == want
    if #entries > 0 then tails[i] = entries[#entries][1] end
    for _, entry in ipairs(entries) do
      local id, flat = entry[1], entry[2]
      local e, t, ok
      if ANY and flat[1] == 'm' then
        -- No filter: only the target matters (the line after the type).
        local m = flat[2]
        local nl = string.find(m, '\n', 1, true) or #m
        e, t = flat[4], string.sub(m, 1, nl - 1)
        ok = string.byte(m, nl + 1) == 10 or string.match(m, '^[^\n]*\n([^\n]*)') == GROUP
      else
        local f = fields(flat)
        e, t, ok = f.e, f.t, wanted(f)
      end
      if ok then
        claim(i, id)
        stat('delivered', t)
        out[#out + 1] = {id, e, 1}
      else
        redis.call('XACK', KEYS[i], GROUP, id)
      end
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
return {out, tails, left}
