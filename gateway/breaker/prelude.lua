-- Functions every breaker script shares (the runner puts them after the script's KEY and ARG tables).
-- State hash fields: state, gen, born, opened_at, next_at, forced, lease, lease_by.

local function clock(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function window(prefix, idx, n)
  local c, f, t, r, s = 0, 0, 0, 0, 0
  for i = idx - n + 1, idx do
    local v = redis.call('HMGET', prefix .. i, 'c', 'f', 't', 'r', 's')
    c = c + (tonumber(v[1]) or 0); f = f + (tonumber(v[2]) or 0); t = t + (tonumber(v[3]) or 0)
    r = r + (tonumber(v[4]) or 0); s = s + (tonumber(v[5]) or 0)
  end
  return c, f, t, r, s
end
local function clear_window(prefix, idx, n, lat)
  for i = idx - n + 1, idx do redis.call('DEL', prefix .. i) end
  redis.call('DEL', lat)
end
local function load(key, now)
  local s = redis.call('HMGET', key, 'state', 'gen', 'opened_at', 'next_at', 'forced', 'lease', 'born', 'lease_by')
  local st = {state = s[1] or 'CLOSED', gen = s[2], opened_at = s[3] or '', next_at = s[4] or '',
              forced = s[5] or '', lease = s[6] or '', born = s[7] or '', lease_by = s[8] or ''}
  local known = st.state == 'CLOSED' or st.state == 'OPEN' or st.state == 'HALF_OPEN'
  if not tonumber(st.gen or '') or not known then
    -- a new (or expired, flushed, or unreadable) breaker: its tickets carry its birth time, so they
    -- never match tickets of the breaker it replaces; garbage must not hold it open for good
    st = {state = 'CLOSED', gen = '0', born = tostring(now), opened_at = '', next_at = '', forced = '', lease = '',
          lease_by = ''}
    redis.call('DEL', key)
    redis.call('HSET', key, 'state', 'CLOSED', 'gen', st.gen, 'born', st.born)
  end
  return st
end
local function token(st) return st.born .. '/' .. st.gen end
local function stale(now, not_after) return not_after ~= '' and now > tonumber(not_after) end
local function bump(key, st, state)
  st.gen = tostring(tonumber(st.gen) + 1)
  st.state = state
  redis.call('HSET', key, 'state', state, 'gen', st.gen, 'lease', '')
end
local function close_circuit(key, st, prefix, idx, n, lat)
  bump(key, st, 'CLOSED')
  redis.call('HSET', key, 'opened_at', '', 'next_at', '', 'forced', '')
  clear_window(prefix, idx, n, lat)
end
local function open_circuit(key, st, now, reset)
  bump(key, st, 'OPEN')
  redis.call('HSET', key, 'opened_at', tostring(now), 'next_at', tostring(now + tonumber(reset)))
end
local function add_rejects(totals, prefix, width, now, count, window_ttl, state_ttl)
  redis.call('HINCRBY', totals, 'rejects', count)
  redis.call('PEXPIRE', totals, state_ttl)
  local bucket = prefix .. math.floor(now / tonumber(width))
  redis.call('HINCRBY', bucket, 'r', count)
  redis.call('PEXPIRE', bucket, window_ttl)
end
