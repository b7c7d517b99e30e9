-- ARGV: P, now, job, token, error
local j, token, err = ARGV[3], ARGV[4], ARGV[5]
local c = held_item(j, token)
if not c then
  return reply()
end
redis.call('ZREM', k('a'), j)
fail_step(c, c.step, c.item, c.attempt, err)
commit(c)
end_item()
return reply()
