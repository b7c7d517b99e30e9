-- ARGV: P, now, id, lifecycle, token, at (-1: done), delivered (bit set).
-- Settles a claimed delivery if the claim is still the caller's: done
-- leaves the outbox; otherwise it is due again at `at`. Returns 1, or 0
-- when the claim was taken over (or the task swept).
local id, lc, token, at, delivered = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local key = k('t', id)
local p = 'fx:' .. lc .. ':'
if redis.call('HGET', key, p .. 'token') ~= token then
  return 0
end
local m = id .. '|' .. lc
if at < 0 then
  redis.call('ZREM', k('outbox'), m)
else
  redis.call('ZADD', k('outbox'), at, m)
  redis.call('HSET', key, p .. 'done', delivered)
end
return 1
