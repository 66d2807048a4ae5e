-- Functions every breaker script shares (the runner puts them after the script's KEY and ARG tables).
-- State hash fields: state, gen, born, opened_at, next_at, forced, lease, lease_by.
-- Window hash fields: <bucket>:c, :f, :t, :r, :s (calls, failures, timeouts, rejects, latency sum ms)
-- of the window's buckets, and last (the newest bucket written). One hash passed in KEYS, never a key
-- built here: on a Redis Cluster every key a script touches is one it declares.

local function clock(override)
  if override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function window(w, idx, n)
  local c, f, t, r, s = 0, 0, 0, 0, 0
  for i = idx - n + 1, idx do
    local v = redis.call('HMGET', w, i .. ':c', i .. ':f', i .. ':t', i .. ':r', i .. ':s')
    c = c + (tonumber(v[1]) or 0); f = f + (tonumber(v[2]) or 0); t = t + (tonumber(v[3]) or 0)
    r = r + (tonumber(v[4]) or 0); s = s + (tonumber(v[5]) or 0)
  end
  return c, f, t, r, s
end
-- The field prefix of bucket idx in the window hash w; the first write to a newer bucket deletes the
-- buckets that left the window (those kept are never older than 'last' - n + 1).
local function bucket(w, idx, n, window_ttl)
  local last = tonumber(redis.call('HGET', w, 'last'))
  if not last or idx > last then
    if last then
      for i = last - n + 1, math.min(last, idx - n) do
        redis.call('HDEL', w, i .. ':c', i .. ':f', i .. ':t', i .. ':r', i .. ':s')
      end
    end
    redis.call('HSET', w, 'last', idx)
  end
  redis.call('PEXPIRE', w, window_ttl)
  return idx .. ':'
end
local function clear_window(w, lat)
  redis.call('DEL', w, lat)
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
local function close_circuit(key, st, w, lat)
  bump(key, st, 'CLOSED')
  redis.call('HSET', key, 'opened_at', '', 'next_at', '', 'forced', '')
  clear_window(w, lat)
end
local function open_circuit(key, st, now, reset)
  bump(key, st, 'OPEN')
  redis.call('HSET', key, 'opened_at', tostring(now), 'next_at', tostring(now + tonumber(reset)))
end
local function add_rejects(totals, w, width, n, now, count, window_ttl, state_ttl)
  redis.call('HINCRBY', totals, 'rejects', count)
  redis.call('PEXPIRE', totals, state_ttl)
  redis.call('HINCRBY', w, bucket(w, math.floor(now / tonumber(width)), tonumber(n), window_ttl) .. 'r', count)
end
-- Successes of earlier calls a process counted itself while it held the circuit CLOSED (``told`` of
-- them at once: ``count`` calls, ``ms`` their latency sum, ``samples`` their latencies space-separated,
-- ``gen`` their tickets' generation): the totals always, the window only if the generation is current.
local function add_told(st, totals, w, lat, now, width, n, window_ttl, state_ttl, kept, count, ms, samples, gen)
  count = tonumber(count) or 0
  if count <= 0 then return end
  redis.call('HINCRBY', totals, 'successes', count)
  redis.call('PEXPIRE', totals, state_ttl)
  if gen ~= token(st) then return end
  local idx = math.floor(now / tonumber(width))
  local b = bucket(w, idx, tonumber(n), window_ttl)
  redis.call('HINCRBY', w, b .. 'c', count)
  redis.call('HINCRBYFLOAT', w, b .. 's', ms)
  local pushed = {}
  for v in string.gmatch(samples, '%S+') do table.insert(pushed, idx .. ':' .. v) end
  if #pushed > 0 then
    redis.call('LPUSH', lat, unpack(pushed))
    redis.call('LTRIM', lat, 0, tonumber(kept) - 1)
    redis.call('PEXPIRE', lat, window_ttl)
  end
end
