-- ARGV: P, now, job, token, until (ms), reason ('' for none). Gives a held
-- job back due at `until`, its attempt unchanged: it waits for a
-- concurrency slot or a rate. A step's job marks the step 'waiting'; with a
-- reason, a step:waiting event says why.
local j, token, until_ms, reason = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local c = held_item(j, token)
if not c then
  return reply()
end
give_back(c, j, until_ms)
if c.item == '-1' then
  local s = F(c.step)
  put(c, s.status, 'waiting')
  if reason ~= '' then
    emit(c, 'step:waiting', c.f[s.key], c.f[s.task],
      '{"reason":' .. cjson.encode(reason) .. ',"until":' .. ARGV[5] .. '}')
  end
end
commit(c)
end_item()
return reply()
