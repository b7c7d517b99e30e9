-- ARGV: P, now, id, spec, paused, next, state, created, max. Stores a new
-- schedule (P:sch:{id}, a hash: spec paused next state created), indexed in
-- P:schedules (every id, lex order) and, unless paused or never due again,
-- in P:schedules:due (id by next tick).
-- Returns 'ok', 'dup' (the id is taken) or 'full:<count>'.
local id, paused, nxt = ARGV[3], ARGV[5], ARGV[6]
local key = k('sch', id)
if redis.call('EXISTS', key) == 1 then
  return 'dup'
end
local n = redis.call('ZCARD', k('schedules'))
if n >= tonumber(ARGV[9]) then
  return 'full:' .. n
end
redis.call('HSET', key, 'spec', ARGV[4], 'paused', paused, 'next', nxt, 'state', ARGV[7], 'created', ARGV[8])
redis.call('ZADD', k('schedules'), 0, id)
if paused == '0' and nxt ~= NEVER then
  redis.call('ZADD', k('schedules', 'due'), nxt, id)
end
return 'ok'
