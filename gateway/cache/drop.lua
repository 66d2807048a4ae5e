-- Drop every entry key indexed under the given paths, then the path indexes themselves.
-- Returns how many entry keys went.
--
-- KEYS: groups...
--   groups   the path indexes (sets of entry keys), one per path
-- ARGV: (none)
local n = 0
for _, group in ipairs(KEYS) do
  local members = redis.call('SMEMBERS', group)
  for i = 1, #members, 500 do
    n = n + redis.call('UNLINK', unpack(members, i, math.min(i + 499, #members)))
  end
  redis.call('UNLINK', group)
end
return n
