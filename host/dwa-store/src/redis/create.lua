-- ARGV: P, now, count, then per task: id, type, queue, pipeline, created, spec,
-- idempotency key ('' for none), body hash, expires at (ms), effects
-- ('' or some of p, s, e: onPending, onSuccess, onError lists), run at (ms;
-- its first steps wait until then), the queue its caller's idle workers
-- lease from ('' for none), how many jobs they take and for how long (ms),
-- steps, then per step: key, task, queue, priority, waiting, dependants
-- (comma-separated).
-- A key held (unexpired, on the store's clock) by an earlier task answers
-- IDEMPOTENT <task> same|different instead of creating one.
-- The jobs asked for are leased once every task is queued (the reply's
-- jobs, per queue in the order asked); a refused task asks for none.
local i = 4
local idx, live, by_queue, queues = {}, {}, {}, {}
local wanted, order = {}, {}
for _ = 1, tonumber(ARGV[3]) do
  begin_item()
  local id, typ, queue, pipeline, created, spec = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local ikey, ihash, iexp, fx = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]
  local run_at = math.max(NOW, tonumber(ARGV[i + 10]))
  local from, max, lease_ms, n = ARGV[i + 11], tonumber(ARGV[i + 12]), tonumber(ARGV[i + 13]), tonumber(ARGV[i + 14])
  i = i + 15
  local key = k('t', id)
  local held
  if ikey ~= '' then
    local cur = redis.call('HMGET', k('idem', ikey), 'task', 'hash', 'expires')
    if cur[1] and tonumber(cur[3]) > NOW then
      held = cur
    end
  end
  if held then
    i = i + n * 6
    end_item('IDEMPOTENT ' .. held[1] .. ' ' .. (held[2] == ihash and 'same' or 'different'))
  elseif redis.call('HSETNX', key, 'type', typ) == 0 then
    i = i + n * 6
    end_item('DUPLICATE ' .. id)
  else
    local w = {'queue', queue, 'status', 'pending', 'pipeline', pipeline, 'created', created, 'total', ARGV[i - 1], 'spec', spec}
    queues[queue] = true
    for s = 0, n - 1 do
      local skey, task, q, prio, waiting, deps = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
        ARGV[i + 5]
      i = i + 6
      local si = int(s)
      local p = F(si)
      w[#w + 1] = p.key
      w[#w + 1] = skey
      w[#w + 1] = p.task
      w[#w + 1] = task
      w[#w + 1] = p.queue
      w[#w + 1] = q
      queues[q] = true
      if prio ~= '0' then
        w[#w + 1] = p.prio
        w[#w + 1] = prio
      end
      if deps ~= '' then
        w[#w + 1] = p.deps
        w[#w + 1] = deps
      end
      if waiting == '0' then
        push_job(id, si, '-1', q, run_at, prio)
      else
        w[#w + 1] = p.waiting
        w[#w + 1] = waiting
      end
    end
    if fx ~= '' then
      w[#w + 1] = 'fx'
      w[#w + 1] = fx
      if string.find(fx, 'p', 1, true) then
        redis.call('ZADD', k('outbox'), NOW, id .. '|onPending')
      end
    end
    chunked('HSET', key, w)
    if ikey ~= '' then
      local ik = k('idem', ikey)
      redis.call('HSET', ik, 'task', id, 'hash', ihash, 'expires', iexp)
      -- Redis forgets it on its own clock; the check above uses the store's.
      redis.call('PEXPIRE', ik, math.max(1, tonumber(iexp) - NOW))
    end
    idx[#idx + 1] = 0
    idx[#idx + 1] = id
    local l = by_queue[queue]
    if not l then
      l = {}
      by_queue[queue] = l
    end
    l[#l + 1] = 0
    l[#l + 1] = id
    if from ~= '' and max > 0 then
      local want = wanted[from]
      if not want then
        want = {0, 0}
        wanted[from] = want
        order[#order + 1] = from
      end
      want[1], want[2] = want[1] + max, math.max(want[2], lease_ms)
    end
    end_item()
  end
end
if #idx > 0 then
  chunked('ZADD', k('idx'), idx)
  chunked('ZADD', k('idx', 'live'), idx)
  for q, l in pairs(by_queue) do
    chunked('ZADD', k('idx', 'q', q), l)
  end
  local names = {}
  for q, _ in pairs(queues) do
    names[#names + 1] = q
  end
  redis.call('SADD', k('queues'), unpack(names))
end
for _, q in ipairs(order) do
  lease(q, wanted[q][1], wanted[q][2])
end
return reply()
