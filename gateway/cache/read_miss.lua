-- Read a key's variants for a worker that keeps a copy of what it reads: when there are none, note
-- that it keeps a copy of the miss, for as long as the copy lives, so a store of the key announces
-- itself (put.lua) and the copy goes.
--
-- KEYS: entry missed
--   entry    the hash of the key's variants
--   missed   set while a worker keeps a copy of the key's miss
-- ARGV: copy_ms
--   copy_ms  how long the copy lives, in milliseconds
local entry, missed = KEYS[1], KEYS[2]
local values = redis.call('HVALS', entry)
if #values == 0 then redis.call('SET', missed, '1', 'PX', ARGV[1]) end
return values
