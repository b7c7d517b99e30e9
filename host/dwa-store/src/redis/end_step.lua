-- ARGV: P, now, job, token, how ('skipped' or 'failed'), message.
-- Ends a held job's step without a result of its own (docs/tasks.md,
-- "Branches"): skipped (result null, a step:skip event with the reason) or
-- failed under a policy that lets the task go on (result {"$error": ...},
-- a step:error event marked tolerated). Its dependants are released as a
-- completion releases them. An item's job ends the whole step: its items'
-- hash goes, and its other item jobs are dropped where they are met (their
-- step is no longer running).
local j, token, how, msg = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local _, step = split_jid(j)
local s = F(step)
local c = held_item(j, token, {s.deps, s.started})
if not c then
  return reply()
end
redis.call('ZREM', k('a'), j)
if c.item ~= '-1' then
  redis.call('DEL', k('it', c.id, c.step))
end
local m = cjson.encode(msg)
if how == 'failed' then
  local item = 'null'
  if c.item ~= '-1' then
    item = c.item
  end
  finish_step(c, c.step, '{"$error":' .. m .. '}', {status = 'failed', error = msg, kind = 'step:error',
    data = '"error":' .. m .. ',"attempt":' .. c.attempt .. ',"item":' .. item .. ',"tolerated":true,'})
else
  finish_step(c, c.step, 'null', {status = 'skipped', error = msg, kind = 'step:skip',
    data = '"reason":' .. m .. ','})
end
commit(c)
end_item()
return reply()
