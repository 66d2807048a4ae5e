-- The breaker's /stats/circuit-breakers figures, read in one go so its counts agree with its state.
--
-- KEYS.state              the breaker's state hash
-- KEYS.totals             successes, failures, timeouts, rejects since start or reset
-- KEYS.lat                latency samples, "bucket:ms", newest first
-- KEYS.window           the rolling window: one hash of its buckets' counts
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.bucket_width       seconds per bucket
-- ARGV.buckets            buckets in the window
--
-- Reply: {now, state, opened_at, next_at, forced, successes, failures, timeouts, rejects,
--         window c, f, t, r, s, samples...}.

local now = clock(ARG.now)
local s = redis.call('HMGET', KEY.state, 'state', 'opened_at', 'next_at', 'forced')
local state = s[1] or 'CLOSED'
if state == 'OPEN' and s[4] ~= '1' and (s[3] or '') ~= '' and now >= tonumber(s[3]) then state = 'HALF_OPEN' end
local tot = redis.call('HMGET', KEY.totals, 'successes', 'failures', 'timeouts', 'rejects')
local n = tonumber(ARG.buckets)
local idx = math.floor(now / tonumber(ARG.bucket_width))
local c, f, t, r, sum = window(KEY.window, idx, n)
local reply = {tostring(now), state, s[2] or '', s[3] or '', s[4] or '',
               tot[1] or '0', tot[2] or '0', tot[3] or '0', tot[4] or '0',
               tostring(c), tostring(f), tostring(t), tostring(r), tostring(sum)}
for _, entry in ipairs(redis.call('LRANGE', KEY.lat, 0, -1)) do
  local sep = string.find(entry, ':', 1, true)
  local b = tonumber(string.sub(entry, 1, sep - 1))
  if b > idx - n and b <= idx then table.insert(reply, string.sub(entry, sep + 1)) end
end
return reply
