-- May a call go ahead? A ticket (go), the probe's lease (probe), or a refusal (reject).
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
-- ARGV.held_rejects       rejects this process answered itself since its last call
-- ARGV.not_after          the latest Redis time the caller still waits for the answer ('' if unknown)
-- ARGV.call_id            this call's id, which a lease granted to it is held by
-- ARGV.abandoned          ids of calls that may hold a lease nobody will hand back (space-separated)
-- ARGV.grant_seconds      how long a granted lease waits for its CONFIRM
-- ARGV.proven             Redis time of a call this process decided on its own breaker while Redis was
--                         unreachable, that succeeded with nothing failing after it ('' if none)
--
-- Reply: {verdict (go|probe|reject|stale), ticket generation, retry_after, old state, new state, hold, now}
-- where hold (on a reject) is the seconds until the probe is due, 'forced' when forced open, or ''
-- when half-open (the probe in flight may end at any moment).

local now = clock(ARG.now)
if stale(now, ARG.not_after) then return {'stale', '', 0, '', '', '', tostring(now)} end
local st = load(KEY.state, now)
for id in string.gmatch(ARG.abandoned, '%S+') do
  if st.lease ~= '' and st.lease_by == id then
    st.lease = ''
    redis.call('HSET', KEY.state, 'lease', '', 'lease_by', '')
  end
end
local old, new = '', ''
redis.call('PEXPIRE', KEY.state, ARG.state_ttl_ms)
local held = tonumber(ARG.held_rejects) or 0
if held > 0 then
  add_rejects(KEY.totals, KEY.window, ARG.bucket_width, ARG.buckets, now, held, ARG.window_ttl_ms, ARG.state_ttl_ms)
end
local proven = tonumber(ARG.proven)
if proven and st.forced ~= '1' and (st.state == 'OPEN' or st.state == 'HALF_OPEN')
   and proven > (tonumber(st.opened_at) or 0) then
  -- the service answered this process's own calls since the circuit opened: as good as a probe
  old, new = st.state, 'CLOSED'
  close_circuit(KEY.state, st, KEY.window, KEY.lat)
end
if st.state == 'OPEN' and st.forced ~= '1' and st.next_at ~= '' and now >= tonumber(st.next_at) then
  old, new = 'OPEN', 'HALF_OPEN'
  bump(KEY.state, st, 'HALF_OPEN')
end
if st.state == 'CLOSED' then return {'go', token(st), 0, old, new, '', tostring(now)} end
if st.state == 'HALF_OPEN' and (st.lease == '' or now >= tonumber(st.lease)) then
  -- a new lease bumps the generation, so a lost probe that returns late changes nothing
  st.gen = tostring(tonumber(st.gen) + 1)
  -- only for as long as its answer may take: the caller confirms it (confirm.lua) before probing
  redis.call('HSET', KEY.state, 'gen', st.gen, 'lease', tostring(now + tonumber(ARG.grant_seconds)),
             'lease_by', ARG.call_id)
  return {'probe', token(st), 0, old, new, '', tostring(now)}
end
local retry, hold = 1, ''
if st.state == 'OPEN' and st.forced == '1' then retry, hold = math.ceil(tonumber(ARG.reset_timeout)), 'forced'
elseif st.state == 'OPEN' then
  retry = math.ceil(tonumber(st.next_at) - now)
  hold = tostring(tonumber(st.next_at) - now)
end
if retry < 1 then retry = 1 end
add_rejects(KEY.totals, KEY.window, ARG.bucket_width, ARG.buckets, now, 1, ARG.window_ttl_ms, ARG.state_ttl_ms)
return {'reject', token(st), retry, old, new, hold, tostring(now)}
