-- ARGV: P, now, max_stalled. Expired leases go back to their queue; a job
-- that stalled more than max_stalled times fails its step. Leases of jobs
-- no longer held (their task ended) are just dropped. The reply's number
-- is how many expired leases were handled.
local max_stalled = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', k('a'), '-inf', '(' .. NOWS, 'LIMIT', 0, 1000)
for _, j in ipairs(expired) do
  begin_item()
  local c = open_held(j, nil)
  if not c then
    redis.call('ZREM', k('a'), j)
  else
    local stalls = tonumber(c.stalls) + 1
    job_put(c, 'stalls', int(stalls))
    if stalls > max_stalled then
      redis.call('ZREM', k('a'), j)
      fail_step(c, c.step, c.item, c.attempt, 'stalled ' .. stalls
        .. ' times: its worker stopped renewing the lease (crashed or hung); giving up')
    else
      give_back(c, j, NOW)
    end
    commit(c)
  end
  end_item()
end
return reply(#expired)
