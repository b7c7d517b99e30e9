-- ARGV: P, now, job, token, run_at, error
local j, token, run_at, err = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
check_leased(j, token)
local id, step, item = split_jid(j)
local jh = k('j', j)
local attempt = tonumber(redis.call('HGET', jh, 'attempt'))
local q = redis.call('HGET', jh, 'queue')
redis.call('ZREM', k('a'), j)
redis.call('HDEL', jh, 'token', 'owner')
redis.call('HSET', jh, 'attempt', attempt + 1)
redis.call('ZADD', k('q', q), run_at, j)
local item_json = 'null'
if item >= 0 then
  item_json = tostring(item)
end
emit(id, 'step:retry', step, '{"error":' .. cjson.encode(err) .. ',"attempt":' .. attempt .. ',"nextAttempt":'
  .. (attempt + 1) .. ',"retryInMs":' .. string.format('%d', math.max(0, run_at - NOW)) .. ',"item":' .. item_json .. '}')
wake(q)
return reply()
