-- ARGV: P, now, 1, then one task as create.lua takes it (the sub-task),
-- then the parent's job, its token, its step's id and until (ms).
-- This script is lib.lua, create.lua wrapped as create_tasks(), and this
-- body: the held job is parked waiting for the child (its attempt
-- unchanged, its step 'waiting', a step:subtask event, its child field
-- set), then the child is created with its parent link, all at once.
-- Items of the reply: the parent's, then the child's.
local n = #ARGV
local j, token, key, until_ms = ARGV[n - 3], ARGV[n - 2], ARGV[n - 1], tonumber(ARGV[n])
local child = ARGV[4]
local c = held_item(j, token)
if not c then
  return reply()
end
give_back(c, j, until_ms)
job_put(c, 'child', child)
local s = F(c.step)
local item = 'null'
if c.item ~= '-1' then
  item = c.item
else
  put(c, s.status, 'waiting')
end
emit(c, 'step:subtask', c.f[s.key], c.f[s.task],
  '{"taskId":' .. cjson.encode(child) .. ',"item":' .. item .. ',"until":' .. ARGV[n] .. '}')
commit(c)
end_item()
local link = {taskId = c.id, step = tonumber(c.step), key = key}
if c.item ~= '-1' then
  link.item = tonumber(c.item)
end
local answer = create_tasks()
redis.call('HSET', k('t', child), 'parent', cjson.encode(link))
redis.call('SADD', k('kids', c.id), child)
return answer
