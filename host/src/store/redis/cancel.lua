-- ARGV: P, now, id
local id = ARGV[3]
local status = redis.call('HGET', k('t', id), 'status')
if not status then
  fail_with('NOT_FOUND', id)
end
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  fail_with('CONFLICT', 'task ' .. id .. ' is already ' .. status)
end
end_task(id, 'cancelled', 'cancelled')
return reply()
