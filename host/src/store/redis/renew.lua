-- ARGV: P, now, lease_ms, then pairs: job, token. Answers 1/0 per job.
local lease_ms = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV, 2 do
  local j, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', k('j', j), 'token') == token and redis.call('ZSCORE', k('a'), j) then
    redis.call('ZADD', k('a'), NOW + lease_ms, j)
    table.insert(out, 1)
  else
    table.insert(out, 0)
  end
end
return out
