-- Release a coalescing lock only if it is still ours (its lease may have passed to another leader).
-- Returns 1 when it was released, 0 when it was not ours (or had gone).
--
-- KEYS: lock
--   lock     the coalescing lock
-- ARGV: token
--   token    the token this leader stored in it
local lock = KEYS[1]
local token = ARGV[1]

if redis.call('GET', lock) == token then return redis.call('DEL', lock) end
return 0
