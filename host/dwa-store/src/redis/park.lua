-- ARGV: P, now, job, token, until (ms), data (JSON of the step:wait event)
-- Parks a held builtin.wait step: it is 'waiting', its job given back due at
-- the time given (its next attempt is the timeout).
local j, token, park_until, data = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local c = held_item(j, token)
if not c then
  return reply()
end
local s = F(c.step)
job_put(c, 'attempt', int(tonumber(c.attempt) + 1))
give_back(c, j, park_until)
put(c, s.status, 'waiting')
emit(c, 'step:wait', c.f[s.key], c.f[s.task], data)
commit(c)
end_item()
return reply()
