-- Store one variant, index its key under its path, and only ever lengthen either key's TTL, so a path
-- index never expires before an entry it must be able to drop; announce the store where a worker may
-- hold a copy of the key, and release the leader's coalescing lock if it is still its own: all in one
-- round trip.
--
-- A worker's copy of a key is either of its entry or of its miss. A key that had no entry can have no
-- copy of one, and its miss is copied only by a worker that says so (``missed``, set by read_miss.lua
-- for as long as the copy lives). So the leader of a miss (its lock still its own) stores a new key
-- without announcing it unless ``missed`` is there: every worker would otherwise wake to drop nothing.
--
-- KEYS: entry group lock missed
--   entry    the hash of the key's variants (variant id -> encoded entry)
--   group    the set of entry keys indexed under the path
--   lock     the leader's coalescing lock
--   missed   set while a worker keeps a copy of the key's miss
-- ARGV: variant blob ttl_ms channel message token
--   variant  the variant's id in the hash
--   blob     the encoded entry
--   ttl_ms   how long to keep it, in milliseconds
--   channel  where to announce the store ('' for no announcement)
--   message  what to announce
--   token    the leader's lock token ('' when it holds none: the lock is left alone)
local entry, group, lock, missed = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local variant, blob, ttl, channel, message, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

local existed = redis.call('EXISTS', entry) == 1
redis.call('HSET', entry, variant, blob)
if redis.call('PTTL', entry) < ttl then redis.call('PEXPIRE', entry, ttl) end
redis.call('SADD', group, entry)
if redis.call('PTTL', group) < ttl then redis.call('PEXPIRE', group, ttl) end
local leading = token ~= '' and redis.call('GET', lock) == token
if channel ~= '' and (existed or not leading or redis.call('EXISTS', missed) == 1) then
  redis.call('PUBLISH', channel, message)
end
if leading then redis.call('DEL', lock) end
return 1
