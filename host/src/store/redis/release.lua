-- ARGV: P, now, then pairs: job, token. Leased jobs go back to their queue untouched.
local n = 0
for i = 3, #ARGV, 2 do
  local j, token = ARGV[i], ARGV[i + 1]
  local jh = k('j', j)
  if redis.call('HGET', jh, 'token') == token and redis.call('ZSCORE', k('a'), j) then
    redis.call('ZREM', k('a'), j)
    redis.call('HDEL', jh, 'token', 'owner')
    local q = redis.call('HGET', jh, 'queue')
    redis.call('ZADD', k('q', q), NOW, j)
    wake(q)
    n = n + 1
  end
end
return reply(nil, n)
