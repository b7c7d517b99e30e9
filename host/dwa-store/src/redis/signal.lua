-- ARGV: P, now, id, step, result (JSON), until ('' for any)
-- Completes a waiting builtin.wait step with its signal, if its wait has
-- not timed out (its job is still delayed, due later than now) and, given
-- `until`, it is the wait that was parked until then.
local id, step, result, expected = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
begin_item()
local s = F(step)
local c = open(id, {s.status, s.key, s.task, s.deps, s.queue})
local st = c.f[s.status]
if not c.f.status or not st then
  end_item('NOT_FOUND ' .. id .. ' step ' .. step)
elseif not is_live(c.f.status) or st ~= 'waiting' then
  end_item('CONFLICT step ' .. cjson.encode(c.f[s.key]) .. ' of task ' .. id .. ' is not waiting for a signal (the task is '
    .. c.f.status .. ', the step ' .. st .. ')')
else
  local dk = k('d', c.f[s.queue])
  local j = jid(id, step, '-1')
  local due = tonumber(redis.call('ZSCORE', dk, j) or '')
  if not due or due <= NOW then
    end_item('CONFLICT the wait of step ' .. cjson.encode(c.f[s.key]) .. ' timed out')
  elseif expected ~= '' and tonumber(expected) ~= due then
    end_item('CONFLICT this signal link is for an earlier wait of step ' .. cjson.encode(c.f[s.key]))
  else
    redis.call('ZREM', dk, j)
    finish_step(c, step, result)
    commit(c)
    end_item()
  end
end
return reply()
