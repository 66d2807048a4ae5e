-- Read a key's variants and, when it has none, take its coalescing lock in the same call: a miss's
-- lookup, its leader's lock and the leader's double-check cost one round trip together.
-- Returns {1} when nothing was stored and the lock is now ours, else {0, variants...} (none when
-- another process holds the lock).
--
-- KEYS: entry lock
--   entry     the hash of the key's variants
--   lock      the coalescing lock of the key
-- ARGV: token lease_ms
--   token     this leader's token, stored in the lock
--   lease_ms  how long the lock lasts if never released, in milliseconds
local entry, lock = KEYS[1], KEYS[2]
local token, lease = ARGV[1], ARGV[2]

local values = redis.call('HVALS', entry)
if #values == 0 and redis.call('SET', lock, token, 'NX', 'PX', lease) then return {1} end
table.insert(values, 1, 0)
return values
