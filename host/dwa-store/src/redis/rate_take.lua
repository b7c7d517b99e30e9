-- ARGV: P, now, key, limit, per (ms). Takes one start of rate key `key`
-- (P:rate:{key}: its theoretical arrival time, ms) by the generic cell rate
-- algorithm, as dwa_core::plan::gcra computes it: bursts up to `limit`,
-- then one per per/limit. Returns -1 when taken, else when (ms) it can be.
local rk = k('rate', ARGV[3])
local limit, per = tonumber(ARGV[4]), tonumber(ARGV[5])
local interval = per / math.max(limit, 1)
local tat = tonumber(redis.call('GET', rk) or '')
local nxt = math.max(tat or NOW, NOW) + interval
if nxt - NOW <= per then
  redis.call('SET', rk, fmt('%.3f', nxt), 'PX', math.max(1, math.ceil(nxt - NOW)))
  return -1
end
return math.ceil(nxt - per)
