-- ARGV: P, now, max. The schedules due now (next tick <= now), earliest
-- first, as {id, spec, paused, next, state, created}, and the next tick
-- after now of any other ('' if none): {rows, next}.
local due = k('schedules', 'due')
local rows = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local f = redis.call('HMGET', k('sch', id), 'spec', 'paused', 'next', 'state', 'created')
  if f[1] then
    rows[#rows + 1] = {id, f[1], f[2], f[3], f[4], f[5]}
  else
    redis.call('ZREM', due, id)
  end
end
local later = redis.call('ZRANGEBYSCORE', due, '(' .. NOWS, '+inf', 'LIMIT', 0, 1)
local nxt = ''
if later[1] then
  nxt = redis.call('HGET', k('sch', later[1]), 'next') or ''
end
return {rows, nxt}
