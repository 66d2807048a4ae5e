-- Take the coalescing lock and, when it is ours, read the entry in the same call: the leader's
-- double-check (has another process stored the answer meanwhile?) costs no second round trip.
-- Returns the entry's variants when the lock was taken, false when another process holds it.
--
-- KEYS: lock entry
--   lock      the coalescing lock of the key
--   entry     the hash of the key's variants
-- ARGV: token lease_ms
--   token     this leader's token, stored in the lock
--   lease_ms  how long the lock lasts if never released, in milliseconds
local lock, entry = KEYS[1], KEYS[2]
local token, lease = ARGV[1], ARGV[2]

if redis.call('SET', lock, token, 'NX', 'PX', lease) then
  return redis.call('HVALS', entry)
end
return false
