-- ARGV: P, now, job, token, run_at, error
local j, token, run_at, err = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local c = held_item(j, token)
if not c then
  return reply()
end
local attempt = tonumber(c.attempt)
job_put(c, 'attempt', int(attempt + 1))
give_back(c, j, run_at)
local item_json = 'null'
if c.item ~= '-1' then
  item_json = c.item
end
local s = F(c.step)
emit(c, 'step:retry', c.f[s.key], c.f[s.task], '{"error":' .. cjson.encode(err) .. ',"attempt":' .. attempt
  .. ',"nextAttempt":' .. (attempt + 1) .. ',"retryInMs":' .. string.format('%d', math.max(0, run_at - NOW))
  .. ',"item":' .. item_json .. '}')
commit(c)
end_item()
return reply()
