-- ARGV: P, now, cutoff (ms), limit. Deletes finished tasks that ended strictly before cutoff.
local cutoff, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', k('done'), '-inf', '(' .. string.format('%d', cutoff), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local t = k('t', id)
  local r = redis.call('HMGET', t, 'total', 'queue', 'status')
  local total = tonumber(r[1] or '0')
  for i = 0, total - 1 do
    redis.call('DEL', k('s', id, i), k('it', id, i))
  end
  redis.call('DEL', t, k('spec', id), k('ev', id), k('tj', id))
  redis.call('ZREM', k('idx'), id)
  if r[2] then
    redis.call('ZREM', k('idx', 'q', r[2]), id)
  end
  if r[3] then
    redis.call('ZREM', k('idx', 's', r[3]), id)
  end
  redis.call('ZREM', k('done'), id)
end
return reply(nil, #ids)
