-- Successes a process counted itself while it held the circuit CLOSED, told in one go (it tells them
-- at least every tenth of a second while calls go on, and with its next failure or stats flush).
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
-- ARGV.latency_samples    how many latency samples are kept
-- ARGV.not_after          the latest Redis time the caller still waits for the answer ('' if unknown)
-- ARGV.told_successes     how many successes
-- ARGV.told_ms            their latency sum, ms
-- ARGV.told_samples       their latencies, ms, space-separated
-- ARGV.told_generation    their tickets' generation
--
-- Reply: {'ok' or 'stale' (came too late: nothing counted, the caller counted them itself), now, the
-- current generation}.

local now = clock(ARG.now)
if stale(now, ARG.not_after) then return {'stale', tostring(now), ''} end
local st = load(KEY.state, now)
redis.call('PEXPIRE', KEY.state, ARG.state_ttl_ms)
add_told(st, KEY.totals, KEY.window, KEY.lat, now, ARG.bucket_width, ARG.buckets, ARG.window_ttl_ms,
         ARG.state_ttl_ms, ARG.latency_samples, ARG.told_successes, ARG.told_ms, ARG.told_samples,
         ARG.told_generation)
return {'ok', tostring(now), token(st)}
