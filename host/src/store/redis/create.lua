-- ARGV: P, now, id, type, queue, pipeline, created, spec, n, then per step: key, task, queue, waiting, dependants(JSON)
local id, typ, queue, pipeline, created, spec, n = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
if redis.call('EXISTS', k('t', id)) == 1 then
  fail_with('DUPLICATE', id)
end
redis.call('HSET', k('t', id), 'type', typ, 'queue', queue, 'status', 'pending', 'pipeline', pipeline,
  'created', created, 'total', n, 'done', 0, 'progress', 0, 'seq', 0)
redis.call('SET', k('spec', id), spec)
redis.call('ZADD', k('idx'), 0, id)
redis.call('ZADD', k('idx', 'q', queue), 0, id)
redis.call('ZADD', k('idx', 's', 'pending'), 0, id)
local queues = {}
for i = 0, n - 1 do
  local b = 10 + i * 5
  queues[ARGV[b + 2]] = true
  local waiting = tonumber(ARGV[b + 3])
  redis.call('HSET', k('s', id, i), 'key', ARGV[b], 'task', ARGV[b + 1], 'queue', ARGV[b + 2],
    'status', 'pending', 'waiting', waiting, 'deps', ARGV[b + 4], 'attempts', 0, 'idone', 0, 'inext', 0)
  if waiting == 0 then
    push_job(id, i, -1, ARGV[b + 2], NOW, 1)
  end
end
for q, _ in pairs(queues) do
  redis.call('SADD', k('queues'), q)
end
return reply()
