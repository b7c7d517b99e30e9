-- ARGV: P, now
-- Brings the keys of an earlier dwa to this one's; run by every host as it
-- connects (a no-op once done). Before priorities, the due jobs of a queue
-- were the list P:q:{queue}: they join P:r:{queue} as due now, at priority
-- 0, in their list's order.
for _, q in ipairs(redis.call('SMEMBERS', k('queues'))) do
  local old = k('q', q)
  if redis.call('TYPE', old).ok == 'list' then
    local js = redis.call('LRANGE', old, 0, -1)
    local ranked = {}
    for n, j in ipairs(js) do
      ranked[#ranked + 1] = int(NOW - #js + n)
      ranked[#ranked + 1] = j
    end
    chunked('ZADD', k('r', q), ranked)
    redis.call('DEL', old)
  end
end
return reply()
