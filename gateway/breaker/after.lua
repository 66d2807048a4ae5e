-- How a call ended: count it and, if its ticket is still current, apply the state rules.
--
-- KEYS.state              the breaker's state hash
-- KEYS.totals             successes, failures, timeouts, rejects since start or reset
-- KEYS.lat                latency samples, "bucket:ms", newest first
-- KEYS.window           the rolling window: one hash of its buckets' counts
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.bucket_width       seconds per bucket
-- ARGV.buckets            buckets in the window
-- ARGV.window_ttl_ms      how long a bucket outlives the window
-- ARGV.state_ttl_ms       an idle breaker is forgotten after this
-- ARGV.reset_timeout      seconds OPEN before the probe
-- ARGV.generation         the ticket's generation ('' if another store issued it)
-- ARGV.probe              1 if the ticket was the probe's, else 0
-- ARGV.outcome            s (success), f (failure) or t (timeout)
-- ARGV.latency_ms         how long the call took
-- ARGV.volume_threshold   calls the window needs before the circuit may open
-- ARGV.error_threshold    failure percentage the window must exceed to open it
-- ARGV.latency_samples    how many latency samples are kept
-- ARGV.not_after          the latest Redis time the caller still waits for the answer ('' if unknown)
-- ARGV.told_successes     successes of this process's earlier calls not yet told (see told.lua), counted first
-- ARGV.told_ms            their latency sum, ms
-- ARGV.told_samples       their latencies, ms, space-separated
-- ARGV.told_generation    their tickets' generation
-- ARGV.channel            where an opening is announced (the breaker channel of forced states)
-- ARGV.service            the service's name, the announcement's message
--
-- A CLOSED circuit that opens is announced on ARGV.channel: every process that holds it CLOSED (and
-- so lets calls through without asking) drops what it holds at once.
--
-- Reply: {old state, new state, now, the current generation} ('' when nothing changed; 'stale' when it
-- came too late to count).

local now = clock(ARG.now)
-- Too late, its caller counted it itself: only a probe's outcome still matters (for the state).
local late = stale(now, ARG.not_after)
if late and ARG.probe ~= '1' then return {'stale', '', tostring(now), ''} end
local outcome = ARG.outcome
local n = tonumber(ARG.buckets)
local idx = math.floor(now / tonumber(ARG.bucket_width))
local st = load(KEY.state, now)
redis.call('PEXPIRE', KEY.state, ARG.state_ttl_ms)
if not late then
  add_told(st, KEY.totals, KEY.window, KEY.lat, now, ARG.bucket_width, ARG.buckets, ARG.window_ttl_ms,
           ARG.state_ttl_ms, ARG.latency_samples, ARG.told_successes, ARG.told_ms, ARG.told_samples,
           ARG.told_generation)
end
if late then
  if st.state == 'HALF_OPEN' and ARG.generation == token(st) then
    if outcome == 's' then close_circuit(KEY.state, st, KEY.window, KEY.lat)
    else open_circuit(KEY.state, st, now, ARG.reset_timeout) end
  end
  return {'stale', '', tostring(now), token(st)}
end
if outcome == 's' then redis.call('HINCRBY', KEY.totals, 'successes', 1)
else redis.call('HINCRBY', KEY.totals, 'failures', 1) end
if outcome == 't' then redis.call('HINCRBY', KEY.totals, 'timeouts', 1) end
redis.call('PEXPIRE', KEY.totals, ARG.state_ttl_ms)
if ARG.generation ~= token(st) then return {'', '', tostring(now), token(st)} end
local b = bucket(KEY.window, idx, n, ARG.window_ttl_ms)
redis.call('HINCRBY', KEY.window, b .. 'c', 1)
if outcome ~= 's' then redis.call('HINCRBY', KEY.window, b .. 'f', 1) end
if outcome == 't' then redis.call('HINCRBY', KEY.window, b .. 't', 1) end
redis.call('HINCRBYFLOAT', KEY.window, b .. 's', ARG.latency_ms)
redis.call('LPUSH', KEY.lat, idx .. ':' .. ARG.latency_ms)
redis.call('LTRIM', KEY.lat, 0, tonumber(ARG.latency_samples) - 1)
redis.call('PEXPIRE', KEY.lat, ARG.window_ttl_ms)
if st.state == 'CLOSED' then
  -- the rule of gateway.breaker.rules.should_open
  local c, f = window(KEY.window, idx, n)
  if c >= tonumber(ARG.volume_threshold) and c > 0 and f * 100 / c > tonumber(ARG.error_threshold) then
    open_circuit(KEY.state, st, now, ARG.reset_timeout)
    redis.call('PUBLISH', ARG.channel, ARG.service)
    return {'CLOSED', 'OPEN', tostring(now), token(st)}
  end
elseif st.state == 'HALF_OPEN' and ARG.probe == '1' then
  if outcome == 's' then
    close_circuit(KEY.state, st, KEY.window, KEY.lat)
    return {'HALF_OPEN', 'CLOSED', tostring(now), token(st)}
  end
  open_circuit(KEY.state, st, now, ARG.reset_timeout)
  return {'HALF_OPEN', 'OPEN', tostring(now), token(st)}
end
return {'', '', tostring(now), token(st)}
