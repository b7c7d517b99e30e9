-- Shared helpers of dwa's Redis scripts. Every script is this library
-- followed by its own body; each runs atomically inside Redis, so a
-- transition that touches many keys is all-or-nothing between hosts.
-- Fences are checked before the first write: Redis does not roll back a
-- script that fails half-way.
--
-- ARGV[1] is the key prefix, ARGV[2] the caller's clock (ms).
-- Keys (P = prefix):
--   P:t:{id}          task hash        P:spec:{id}     the stored spec
--   P:s:{id}:{i}      step hash        P:it:{id}:{i}   forEach item results
--   P:j:{job}         job hash         P:tj:{id}       set of a task's jobs
--   P:q:{queue}       ready/delayed jobs by due time (zset)
--   P:a               leased jobs by lease expiry (zset)
--   P:ev:{id}         the task's events (list); channel P:events
--   P:idx, P:idx:q:{queue}, P:idx:s:{status}   task indexes (lex zsets)
--   P:done            finished tasks by end time (retention sweep)
--   P:token           fencing token counter; P:queues set of queue names

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local EVENTS = {}
local PENDING = {}
local PENDING_ORDER = {}
local WOKE = {}
local FINISHED = ''

local function k(...)
  return P .. ':' .. table.concat({...}, ':')
end

local function jid(id, step, item)
  return id .. '|' .. step .. '|' .. item
end

local function split_jid(j)
  local id, step, item = string.match(j, '^(.*)|(%-?%d+)|(%-?%d+)$')
  return id, tonumber(step), tonumber(item)
end

local function jstr(s)
  if s == nil or s == false then
    return 'null'
  end
  return cjson.encode(s)
end

local function num(n)
  if n == math.floor(n) then
    return string.format('%d.0', n)
  end
  return tostring(n)
end

local function fail_with(code, msg)
  error({err = code .. ' ' .. msg})
end

local function emit(id, kind, step, data)
  local seq = redis.call('HINCRBY', k('t', id), 'seq', 1)
  local key, task = nil, nil
  if step ~= nil then
    local r = redis.call('HMGET', k('s', id, step), 'key', 'task')
    key, task = r[1], r[2]
  end
  local ev = '{"seq":' .. seq .. ',"type":' .. cjson.encode(kind) .. ',"taskId":' .. cjson.encode(id)
    .. ',"stepId":' .. jstr(key) .. ',"stepTask":' .. jstr(task) .. ',"data":' .. data
    .. ',"timestamp":' .. string.format('%d', NOW) .. '}'
  local list = PENDING[id]
  if not list then
    list = {}
    PENDING[id] = list
    table.insert(PENDING_ORDER, id)
  end
  table.insert(list, ev)
  table.insert(EVENTS, ev)
end

-- Writes the events of this script: one RPUSH per task, one PUBLISH in all.
local function flush_events()
  for _, id in ipairs(PENDING_ORDER) do
    redis.call('RPUSH', k('ev', id), unpack(PENDING[id]))
  end
  if #EVENTS > 0 then
    redis.call('PUBLISH', P .. ':events', '[' .. table.concat(EVENTS, ',') .. ']')
  end
end

local function set_status(id, new, old)
  local t = k('t', id)
  if not old then
    old = redis.call('HGET', t, 'status')
  end
  if old then
    redis.call('ZREM', k('idx', 's', old), id)
  end
  redis.call('ZADD', k('idx', 's', new), 0, id)
  redis.call('HSET', t, 'status', new)
end

local function wake(queue)
  WOKE[queue] = true
end

local function push_job(id, step, item, queue, run_at, attempt)
  local j = jid(id, step, item)
  -- A job hash is deleted when its job ends, so this one starts clean.
  redis.call('HSET', k('j', j), 'queue', queue, 'attempt', attempt, 'stalls', 0)
  redis.call('ZADD', k('q', queue), run_at, j)
  redis.call('SADD', k('tj', id), j)
  wake(queue)
end

-- Checks the caller still holds the job's lease (before any write).
local function check_leased(j, token)
  local t = redis.call('HGET', k('j', j), 'token')
  if t ~= token or not redis.call('ZSCORE', k('a'), j) then
    fail_with('LEASE_LOST', j)
  end
end

local function drop_job(j)
  local id = split_jid(j)
  redis.call('ZREM', k('a'), j)
  redis.call('DEL', k('j', j))
  redis.call('SREM', k('tj', id), j)
end

local function finish_step(id, step, result)
  local s = k('s', id, step)
  redis.call('HSET', s, 'status', 'completed', 'result', result, 'completed', NOW)
  local t = k('t', id)
  local done = redis.call('HINCRBY', t, 'done', 1)
  local total = tonumber(redis.call('HGET', t, 'total'))
  local pct = math.min(100, done * 100 / total)
  redis.call('HSET', t, 'progress', pct)
  emit(id, 'step:complete', step, '{"result":' .. result .. ',"progress":' .. num(pct) .. '}')
  local deps = cjson.decode(redis.call('HGET', s, 'deps'))
  for _, d in ipairs(deps) do
    local ds = k('s', id, d)
    local w = redis.call('HINCRBY', ds, 'waiting', -1)
    if w == 0 and redis.call('HGET', ds, 'status') == 'pending' then
      push_job(id, d, -1, redis.call('HGET', ds, 'queue'), NOW, 1)
    end
  end
  if done >= total then
    local final = redis.call('HGET', k('s', id, total - 1), 'result') or 'null'
    redis.call('HSET', t, 'result', final, 'completed', NOW, 'progress', 100)
    set_status(id, 'completed', 'active')
    redis.call('ZADD', k('done'), NOW, id)
    emit(id, 'pipeline:complete', nil, '{"status":"completed","result":' .. final .. '}')
    FINISHED = 'completed'
  end
end

local function end_task(id, status, err)
  local t = k('t', id)
  redis.call('HSET', t, 'error', err, 'completed', NOW)
  set_status(id, status)
  local total = tonumber(redis.call('HGET', t, 'total'))
  local reason = 'aborted: pipeline failed'
  if status == 'cancelled' then
    reason = 'aborted: cancelled'
  end
  for i = 0, total - 1 do
    local s = k('s', id, i)
    local st = redis.call('HGET', s, 'status')
    if st == 'pending' or st == 'running' then
      redis.call('HSET', s, 'status', 'skipped', 'completed', NOW)
      if st == 'running' then
        redis.call('HSET', s, 'error', reason)
      end
    end
    redis.call('DEL', k('it', id, i))
  end
  for _, j in ipairs(redis.call('SMEMBERS', k('tj', id))) do
    local q = redis.call('HGET', k('j', j), 'queue')
    if q then
      redis.call('ZREM', k('q', q), j)
    end
    redis.call('ZREM', k('a'), j)
    redis.call('DEL', k('j', j))
  end
  redis.call('DEL', k('tj', id))
  redis.call('ZADD', k('done'), NOW, id)
  emit(id, 'pipeline:complete', nil, '{"status":' .. cjson.encode(status) .. ',"error":' .. cjson.encode(err) .. '}')
  FINISHED = status
end

-- Fails a step for good: the task fails, everything else is skipped.
local function fail_step(id, step, item, attempt, err)
  local s = k('s', id, step)
  redis.call('HSET', s, 'status', 'failed', 'error', err, 'completed', NOW)
  local item_json = 'null'
  if item >= 0 then
    item_json = tostring(item)
  end
  emit(id, 'step:error', step, '{"error":' .. cjson.encode(err) .. ',"attempt":' .. attempt .. ',"item":' .. item_json .. '}')
  local task_err = err
  if redis.call('HGET', k('t', id), 'pipeline') == '1' then
    local r = redis.call('HMGET', s, 'key', 'task')
    task_err = 'step ' .. r[1] .. ' (' .. r[2] .. ') failed: ' .. err
  end
  end_task(id, 'failed', task_err)
end

local function lease(queue, owner, max, lease_ms)
  local out = {}
  local jobs = redis.call('ZRANGEBYSCORE', k('q', queue), '-inf', NOW, 'LIMIT', 0, max)
  for _, j in ipairs(jobs) do
    redis.call('ZREM', k('q', queue), j)
    local token = redis.call('INCR', k('token'))
    redis.call('HSET', k('j', j), 'token', token, 'owner', owner)
    redis.call('ZADD', k('a'), NOW + lease_ms, j)
    local id, step, item = split_jid(j)
    local attempt = tonumber(redis.call('HGET', k('j', j), 'attempt'))
    if item < 0 then
      local s = k('s', id, step)
      -- A step job's attempts only grow, so the job's count is the step's.
      redis.call('HSET', s, 'status', 'running', 'attempts', attempt)
      redis.call('HSETNX', s, 'started', NOW)
      -- The first start of any step is the moment the task turns active.
      if redis.call('HSETNX', k('t', id), 'started', NOW) == 1 then
        set_status(id, 'active', 'pending')
      end
      emit(id, 'step:start', step, '{"attempt":' .. attempt .. '}')
    end
    table.insert(out, j)
    table.insert(out, tostring(attempt))
    table.insert(out, tostring(token))
  end
  return out
end

local function reply(jobs, next_due)
  flush_events()
  local woke = {}
  for q, _ in pairs(WOKE) do
    table.insert(woke, q)
  end
  return {woke, FINISHED, EVENTS, jobs or {}, next_due or -1}
end
