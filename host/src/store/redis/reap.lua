-- ARGV: P, now, max_stalled. Expired leases go back to their queue; a job
-- that stalled more than max_stalled times fails its step. The count of
-- jobs handled travels in the reply's last slot.
local max_stalled = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', k('a'), '-inf', '(' .. string.format('%d', NOW), 'LIMIT', 0, 1000)
local n = 0
for _, j in ipairs(expired) do
  local jh = k('j', j)
  local id, step, item = split_jid(j)
  if redis.call('EXISTS', jh) == 0 then
    redis.call('ZREM', k('a'), j)
  else
    local stalls = redis.call('HINCRBY', jh, 'stalls', 1)
    if stalls > max_stalled then
      local attempt = tonumber(redis.call('HGET', jh, 'attempt') or '1')
      fail_step(id, step, item, attempt, 'stalled ' .. stalls
        .. ' times: its worker stopped renewing the lease (crashed or hung); giving up')
    else
      redis.call('ZREM', k('a'), j)
      redis.call('HDEL', jh, 'token', 'owner')
      local q = redis.call('HGET', jh, 'queue')
      redis.call('ZADD', k('q', q), NOW, j)
      wake(q)
    end
  end
  n = n + 1
end
return reply(nil, n)
