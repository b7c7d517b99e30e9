-- ARGV: P, now, cutoff (ms), limit. Deletes finished tasks that ended
-- strictly before cutoff, with their item hashes and sub-task sets (events
-- are in the task hash); the reply's
-- number is how many.
local cutoff, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', k('done'), '-inf', '(' .. string.format('%d', cutoff), 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  local t = k('t', id)
  local r = redis.call('HMGET', t, 'total', 'queue', 'status')
  local keys = {t, k('kids', id)}
  for i = 0, tonumber(r[1] or '0') - 1 do
    keys[#keys + 1] = k('it', id, i)
  end
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
  redis.call('ZREM', k('idx'), id)
  redis.call('ZREM', k('idx', 'live'), id)
  if r[2] then
    redis.call('ZREM', k('idx', 'q', r[2]), id)
  end
  if r[3] then
    redis.call('ZREM', k('idx', 's', r[3]), id)
  end
end
if #ids > 0 then
  chunked('ZREM', k('done'), ids)
end
return reply(#ids)
