-- Rejects this process answered itself, added to the shared counters (the stats flusher sends them).
--
-- KEYS.totals             successes, failures, timeouts, rejects since start or reset
-- KEYS.window           the rolling window: one hash of its buckets' counts
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.bucket_width       seconds per bucket
-- ARGV.buckets            buckets in the window
-- ARGV.window_ttl_ms      how long a bucket outlives the window
-- ARGV.state_ttl_ms       an idle breaker is forgotten after this
-- ARGV.held_rejects       how many
--
-- Reply: 1.

local now = clock(ARG.now)
local held = tonumber(ARG.held_rejects) or 0
if held > 0 then
  add_rejects(KEY.totals, KEY.window, ARG.bucket_width, ARG.buckets, now, held, ARG.window_ttl_ms, ARG.state_ttl_ms)
end
return 1
