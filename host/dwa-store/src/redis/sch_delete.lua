-- ARGV: P, now, id. Deletes a schedule and its index entries; returns 1 if it existed.
local id = ARGV[3]
redis.call('ZREM', k('schedules'), id)
redis.call('ZREM', k('schedules', 'due'), id)
return redis.call('DEL', k('sch', id))
