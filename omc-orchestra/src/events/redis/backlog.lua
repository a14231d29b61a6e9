-- How far the consumer groups of a priority stream are behind, and the backlog cap:
-- functions put in front of the publish script and of the scripts of `backlog.rs`,
-- so the cap counts what it drops exactly as the stats count what is left.

-- Whether stream id `a` comes before stream id `b` (`{ms}-{seq}`; ms fits a Lua number).
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am) or 0, tonumber(as) or 0, tonumber(bm) or 0, tonumber(bs) or 0
  return am < bm or (am == bm and as < bs)
end

-- The groups of stream `q`, each a table of its `XINFO GROUPS` fields (`lag` is false
-- where Redis cannot tell it, and missing before Redis 7.0).
local function groups_of(q)
  local groups = {}
  for _, raw in ipairs(redis.call('XINFO', 'GROUPS', q)) do
    local g = {}
    for j = 1, #raw, 2 do g[raw[j]] = raw[j + 1] end
    groups[#groups + 1] = g
  end
  return groups
end

-- The entries of a stream of `len` entries, the newest `newest`, that group `g` has not
-- read. Redis's lag, at most `len`: Redis keeps counting entries trimmed before the group
-- read them (`cap_stream` sets its count right, but a group may predate that). Where
-- Redis cannot tell (before 7.0, or after an `XDEL`), an upper bound: every entry, unless
-- the group has read the newest.
local function unread(g, len, newest)
  local lag = g['lag']
  if type(lag) == 'number' then return math.min(lag, len) end
  if newest and not id_before(g['last-delivered-id'], newest) then return 0 end
  return len
end

-- Trim stream `q` back to `cap` entries once it is 1 % over (so the groups are looked
-- at once per that many publishes, and not at all below the cap). What that drops before
-- some group had read it is added to field `trimmed-unread` of hash `STATS`, counted once
-- however many groups had not read it; each such group's read count is moved on by what
-- it lost, or Redis's lag would go on counting it. Answers the count.
local function cap_stream(q, cap, STATS)
  cap = tonumber(cap)
  local len = redis.call('XLEN', q)
  if len <= cap + math.floor(cap / 100) then return 0 end
  local groups, last = groups_of(q), redis.call('XREVRANGE', q, '+', '-', 'COUNT', 1)[1]
  local left = len - redis.call('XTRIM', q, 'MAXLEN', cap)
  local lost = 0
  for _, g in ipairs(groups) do
    local own = math.max(0, unread(g, len, last and last[1]) - left)
    local read = g['entries-read']
    if own > 0 and type(g['lag']) == 'number' and type(read) == 'number' then
      redis.pcall('XGROUP', 'SETID', q, g['name'], g['last-delivered-id'],
        'ENTRIESREAD', read + own)
    end
    lost = math.max(lost, own)
  end
  if lost > 0 then redis.call('HINCRBY', STATS, 'trimmed-unread', lost) end
  return lost
end
