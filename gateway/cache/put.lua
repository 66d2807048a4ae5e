-- Store one variant, index its key under its path, and only ever lengthen either key's TTL, so a path
-- index never expires before an entry it must be able to drop; announce the store, and release the
-- leader's coalescing lock if it is still its own: all in one round trip.
--
-- KEYS: entry group lock
--   entry    the hash of the key's variants (variant id -> encoded entry)
--   group    the set of entry keys indexed under the path
--   lock     the leader's coalescing lock
-- ARGV: variant blob ttl_ms channel message token
--   variant  the variant's id in the hash
--   blob     the encoded entry
--   ttl_ms   how long to keep it, in milliseconds
--   channel  where to announce the store ('' for no announcement)
--   message  what to announce
--   token    the leader's lock token ('' when it holds none: the lock is left alone)
local entry, group, lock = KEYS[1], KEYS[2], KEYS[3]
local variant, blob, ttl, channel, message, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]

redis.call('HSET', entry, variant, blob)
if redis.call('PTTL', entry) < ttl then redis.call('PEXPIRE', entry, ttl) end
redis.call('SADD', group, entry)
if redis.call('PTTL', group) < ttl then redis.call('PEXPIRE', group, ttl) end
if channel ~= '' then redis.call('PUBLISH', channel, message) end
if token ~= '' and redis.call('GET', lock) == token then redis.call('DEL', lock) end
return 1
