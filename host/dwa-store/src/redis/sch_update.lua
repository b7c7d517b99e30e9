-- ARGV: P, now, id, expect, next, paused, state. Compare-and-set: updates
-- the schedule only if its next tick is still `expect` (of two hosts that
-- fired one tick, one records it). Returns 1 if it did, else 0.
local id, nxt, paused = ARGV[3], ARGV[5], ARGV[6]
local key = k('sch', id)
if redis.call('HGET', key, 'next') ~= ARGV[4] then
  return 0
end
redis.call('HSET', key, 'next', nxt, 'paused', paused, 'state', ARGV[7])
if paused == '0' and nxt ~= NEVER then
  redis.call('ZADD', k('schedules', 'due'), nxt, id)
else
  redis.call('ZREM', k('schedules', 'due'), id)
end
return 1
