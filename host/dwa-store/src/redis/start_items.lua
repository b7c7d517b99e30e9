-- ARGV: P, now, job, token, items, concurrency
local j, token, n, conc = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local c = held_item(j, token, {})
if not c then
  return reply()
end
if c.item ~= '-1' then
  end_item('CONFLICT ' .. j .. ' is an item, not a step')
  return reply()
end
local s = F(c.step)
redis.call('ZREM', k('a'), j)
-- The step job is done: its token no longer holds, its items do.
put(c, s.token, int(-tonumber(c.token)))
if n == 0 then
  c.f[s.deps] = redis.call('HGET', c.key, s.deps)
  finish_step(c, c.step, '[]')
else
  local first = math.min(n, math.max(conc, 1))
  put(c, s.itot, int(n))
  put(c, s.idone, '0')
  put(c, s.inext, int(first))
  for i = 0, first - 1 do
    push_job(c.id, c.step, i, c.f[s.queue], NOW, c.f[s.prio])
  end
end
commit(c)
end_item()
return reply()
