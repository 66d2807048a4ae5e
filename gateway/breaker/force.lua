-- An operator's action: open (held until close or reset), close (a fresh window), reset (counts too).
--
-- KEYS.state              the breaker's state hash
-- KEYS.totals             successes, failures, timeouts, rejects since start or reset
-- KEYS.lat                latency samples, "bucket:ms", newest first
-- KEYS.window           the rolling window: one hash of its buckets' counts
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.state_ttl_ms       an idle breaker is forgotten after this
-- ARGV.action             open, close or reset
--
-- Reply: {old state, new state}.

local now = clock(ARG.now)
local st = load(KEY.state, now)
local old = st.state
if ARG.action == 'open' then
  bump(KEY.state, st, 'OPEN')
  redis.call('HSET', KEY.state, 'forced', '1', 'opened_at', tostring(now), 'next_at', '')
else
  bump(KEY.state, st, 'CLOSED')
  redis.call('HSET', KEY.state, 'forced', '', 'opened_at', '', 'next_at', '')
  clear_window(KEY.window, KEY.lat)
  if ARG.action == 'reset' then redis.call('DEL', KEY.totals) end
end
redis.call('PEXPIRE', KEY.state, ARG.state_ttl_ms)
return {old, st.state}
