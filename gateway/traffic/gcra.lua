-- GCRA: decide one request against every limit of a rule at once, on Redis's own clock, or add
-- requests a worker already admitted on its own (never refused: they were within the headroom).
--
-- KEYS (one per limit of the rule, in the rule's order):
--   KEYS[i]          cell      the limit's cell for this client: its TAT (theoretical arrival time), microseconds
-- ARGV (built by gcra_argv in ratelimit.py):
--   ARGV[2i - 1]     interval  limit i's emission interval (window / quota), microseconds
--   ARGV[2i]         window    limit i's window, microseconds
--   ARGV[2 #KEYS + 1] count    requests to count: 1 decides one request; more adds admitted ones
-- Returns {refused, then per limit: remaining, reset}: for a passed request what is left after it
-- and the microseconds until the quota is whole again; for a refused one, on a limit that refused
-- it, 0 and the wait until one more request would pass (the other limits: what they have left).
-- Each cell expires when its client is back to a full quota (then it means nothing).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limits = #KEYS
local count = tonumber(ARGV[2 * limits + 1])
local tats, out, spare, refused = {}, {0}, {}, 0
for i = 1, limits do
  local cell = KEYS[i]
  local interval, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', cell) or '') or now
  if tat < now then tat = now end
  local new = tat + interval * count
  tats[i] = new
  if count == 1 and new - window > now then
    refused = 1
    out[2 * i], out[2 * i + 1] = 0, new - window - now
  else
    out[2 * i], out[2 * i + 1] = math.max(0, math.floor((now + window - new) / interval)), new - now
    spare[i] = {math.floor((now + window - tat) / interval), tat - now}
  end
end
if refused == 1 then
  out[1] = 1
  for i, left in pairs(spare) do out[2 * i], out[2 * i + 1] = left[1], left[2] end
  return out
end
for i = 1, limits do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
end
return out
