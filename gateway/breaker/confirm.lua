-- The probe's caller got its lease: make it last for the probe.
--
-- KEYS.state              the breaker's state hash
-- ARGV.now                the scripts' clock ('' for Redis's TIME; tests drive it)
-- ARGV.call_id            the call the lease was granted to
-- ARGV.lease_seconds      how long a confirmed probe may take before another call may probe
-- ARGV.not_after          the latest Redis time the caller still waits for the answer ('' if unknown)
--
-- Reply: {ok|lost|stale, now} ('lost': the lease went to another call, or was freed, before the
-- confirmation came; one that ran out but was not granted again is still this call's).

local now = clock(ARG.now)
if stale(now, ARG.not_after) then return {'stale', tostring(now)} end
local s = redis.call('HMGET', KEY.state, 'state', 'lease', 'lease_by')
if s[1] ~= 'HALF_OPEN' or s[3] ~= ARG.call_id or (s[2] or '') == '' then return {'lost', tostring(now)} end
redis.call('HSET', KEY.state, 'lease', tostring(now + tonumber(ARG.lease_seconds)))
return {'ok', tostring(now)}
