-- ARGV: P, now, job, token, items, concurrency
local j, token, n, c = ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
check_leased(j, token)
drop_job(j)
local id, step = split_jid(j)
if n == 0 then
  finish_step(id, step, '[]')
  return reply()
end
local first = math.min(n, math.max(c, 1))
local s = k('s', id, step)
redis.call('HSET', s, 'itot', n, 'idone', 0, 'inext', first)
local q = redis.call('HGET', s, 'queue')
for i = 0, first - 1 do
  push_job(id, step, i, q, NOW, 1)
end
return reply()
