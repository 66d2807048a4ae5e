-- Rejects this process answered itself, added to the shared counters (the stats flusher sends them).
--
-- KEYS.totals             successes, failures, timeouts, rejects since start or reset
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.window_prefix      the window's bucket keys are this plus the bucket number
-- ARGV.bucket_width       seconds per bucket
-- ARGV.window_ttl_ms      how long a bucket outlives the window
-- ARGV.state_ttl_ms       an idle breaker is forgotten after this
-- ARGV.held_rejects       how many
--
-- Reply: 1.

local now = clock(ARG.now)
local held = tonumber(ARG.held_rejects) or 0
if held > 0 then
  add_rejects(KEY.totals, ARG.window_prefix, ARG.bucket_width, now, held, ARG.window_ttl_ms, ARG.state_ttl_ms)
end
return 1
