-- ARGV: P, now, max, lease (ms). Claims due lifecycle deliveries from the
-- outbox (P:outbox, members "id|lifecycle" scored by when they are due):
-- each claimed one is hidden until now + lease, its try and token counted
-- in the task hash (fx:<lifecycle>:attempt, :token; :done, the effects
-- already delivered). Members of swept tasks are dropped.
-- Returns {{id, lifecycle, attempt, token, done}, ...}.
local max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local ob = k('outbox')
local out = {}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', ob, '-inf', NOW, 'LIMIT', 0, max)) do
  local id, lc = string.match(m, '^(.*)|([^|]+)$')
  local key = k('t', id)
  local p = 'fx:' .. lc .. ':'
  local f = redis.call('HMGET', key, 'status', p .. 'attempt', p .. 'token', p .. 'done')
  if not f[1] then
    redis.call('ZREM', ob, m)
  else
    local attempt = tonumber(f[2] or '0') + 1
    local token = tonumber(f[3] or '0') + 1
    redis.call('HSET', key, p .. 'attempt', int(attempt), p .. 'token', int(token))
    redis.call('ZADD', ob, NOW + lease, m)
    out[#out + 1] = {id, lc, int(attempt), int(token), f[4] or '0'}
  end
end
return out
