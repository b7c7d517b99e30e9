-- ARGV: P, now, key, limit, holder, until. Takes a slot of concurrency key
-- `key` (P:slot:{key}: holders by the time their slot lasts) for `holder`,
-- if fewer than `limit` hold one; a holder that has one keeps it, to the
-- new time. Slots past their time are free. Returns 1 if it holds one.
local zk = k('slot', ARGV[3])
local holder, untils = ARGV[5], ARGV[6]
redis.call('ZREMRANGEBYSCORE', zk, '-inf', '(' .. NOWS)
local ok = 0
if redis.call('ZSCORE', zk, holder) or redis.call('ZCARD', zk) < tonumber(ARGV[4]) then
  redis.call('ZADD', zk, untils, holder)
  ok = 1
end
-- The set goes by itself once its last slot's time has passed.
local last = redis.call('ZRANGE', zk, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIRE', zk, math.max(1, tonumber(last[2]) - NOW) + 1000)
end
return ok
