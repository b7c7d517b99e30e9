-- Shared helpers of dwa's Redis scripts. Every script is this library
-- followed by its own body; each runs atomically inside Redis, so a
-- transition that touches many keys is all-or-nothing between hosts.
-- Fences are checked before an item's first write: Redis does not roll back
-- a script that fails half-way.
--
-- The data model is built for few commands per step (Redis CPU is what
-- bounds throughput): a task and all its steps live in ONE hash, its
-- events among them; the leases and completions of one call read it with
-- one HMGET and write it with one HSET (OPEN, below); queue and index
-- updates of a whole batch are one variadic command.
-- Jobs of a task that ended are not hunted down: they are dropped when a
-- lease, renewal or the reaper meets them (their step is no longer held).
--
-- ARGV[1] is the key prefix, ARGV[2] the caller's clock (ms).
-- Keys (P = prefix):
--   P:t:{id}     the task hash: type queue status pipeline created started
--                completed total done progress seq result error spec parent
--                (a sub-task's link to its parent's job, JSON), and
--                per step i: i:key i:task i:queue i:prio (absent: 0) i:status i:waiting i:deps
--                i:attempt (next try) i:attempts (tries started) i:token
--                i:stalls i:started i:completed i:result i:error
--                i:itot i:idone i:inext (forEach items), i:child (the
--                sub-task the step's job spawned), and its events
--                e1, e2, ... (e{seq}: written by the same HSET as the change)
--   P:it:{id}:{i}  forEach items of step i: n (result), n:token, n:attempt, n:stalls,
--                n:child
--   P:kids:{id}  the sub-tasks a task spawned (set)
--   P:r:{queue}  due jobs by rank (zset of "id|step|item"): when each became
--                due less AGING_MS per priority level, leased lowest first
--   P:d:{queue}  delayed jobs (retries, runAt, parked waits) by due time
--                (zset), ranked into P:r by the first lease that finds them due
--   P:a          leased jobs by lease expiry (zset; and SKIPLIST, below)
--   channel P:events  every event of a script, as one JSON array
--   P:idx, P:idx:q:{queue}    every task (lex zsets, newest = greatest id)
--   P:idx:live   pending and active tasks; P:idx:s:{status} finished ones
--   P:done       finished tasks by end time (retention sweep)
--   P:queues     queue names
--   P:outbox     lifecycle deliveries due ("id|lifecycle" by due time)
--   P:idem:{key} an idempotency key: task, hash, expires
--   P:sch:{id}   a schedule: spec paused next state created
--   P:slot:{key} concurrency slots: holders by the time their slot lasts (zset)
--   P:rate:{key} a rate key's theoretical arrival time of the next start (ms)
--   P:schedules  every schedule id (lex zset); P:schedules:due  unpaused ones by next tick
--
-- A job is held while its token field is positive and equal to the
-- holder's; giving a job back negates the token, the next lease takes
-- |token| + 1, so an old holder can never match again.

local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local NOWS = ARGV[2]
local fmt = string.format
local EVENTS = {}
local ITEMS = {}
local JOBS = {}
-- P:a is kept a skiplist. Redis stores a zset of at most
-- zset-max-listpack-entries (128) short members as a listpack, where every
-- ZADD walks and re-validates the whole list: ~34,000 instructions per
-- lease with ~100 jobs leased (callgrind; docs/benchmarks.md), against a
-- few hundred in a skiplist. A member longer than zset-max-listpack-value
-- (64) makes Redis create the zset as a skiplist, and a skiplist never
-- turns back; this member stays for good (score +inf: never expired).
local SKIPLIST = 'not a job: this member keeps the zset a skiplist, where adding a member is cheap'
local function leases()
  return {'+inf', SKIPLIST}
end
local LEASES = leases()
local QADD = {}
local DONE = {}
local ITEM = nil

-- Field names of step i in the task hash ("i:status", ...), each built on
-- its first use per step index per call (a call uses about half of the
-- 19): every concatenation makes Lua intern a new string.
local STEP_FIELDS = {key = true, task = true, queue = true, prio = true, status = true, waiting = true, deps = true,
  attempt = true, attempts = true, token = true, stalls = true, started = true, completed = true, result = true,
  error = true, itot = true, idone = true, inext = true, child = true}
local LAZY = {__index = function(f, n)
  if not STEP_FIELDS[n] then
    error('no step field ' .. tostring(n))
  end
  local v = f[1] .. ':' .. n
  rawset(f, n, v)
  return v
end}
local FIELDS = {}
local function F(i)
  local f = FIELDS[i]
  if not f then
    f = setmetatable({i}, LAZY)
    FIELDS[i] = f
  end
  return f
end

-- What the hot paths read of a task and of a step (per step index, built
-- once per call): a lease of its job, and its job's completion
-- (finish_step's fields; the task's parent and effects only when it ends,
-- through got()).
local LEASE_TASK, DONE_TASK = {'seq', 'status', 'started'}, {'seq', 'total', 'done'}
local LEASE_READ, DONE_READ, DEP_READ = {}, {}, {}
local function lease_fields(s)
  return {s.status, s.token, s.attempt, s.started, s.key, s.task, s.itot}
end
local function done_fields(s)
  return {s.status, s.token, s.key, s.task, s.deps, s.started}
end
-- A dependant's, when a step it waits for completes.
local function dep_fields(s)
  return {s.waiting, s.status, s.queue, s.prio}
end
local function per_step(cache, i, build)
  local v = cache[i]
  if not v then
    v = build(F(i))
    cache[i] = v
  end
  return v
end

-- A key of up to three parts (no table per call: keys are built for every job).
local function k(a, b, c)
  if c then
    return P .. ':' .. a .. ':' .. b .. ':' .. c
  elseif b then
    return P .. ':' .. a .. ':' .. b
  end
  return P .. ':' .. a
end

local function jid(id, step, item)
  return id .. '|' .. step .. '|' .. item
end

-- Step and item stay strings (they mostly build field names; Lua turns a
-- number into a string with sprintf); item '-1' marks a step's own job.
local function split_jid(j)
  return string.match(j, '^(.*)|(%-?%d+)|(%-?%d+)$')
end

-- JSON strings of step ids, task names and event kinds, encoded once per call.
local JSON = {}
local function jstr(s)
  if s == nil or s == false then
    return 'null'
  end
  local v = JSON[s]
  if not v then
    v = cjson.encode(s)
    JSON[s] = v
  end
  return v
end

local function num(n)
  if n == math.floor(n) then
    return string.format('%d.0', n)
  end
  return tostring(n)
end

-- Variadic commands in slices: Lua's unpack is limited to a few thousand
-- values. n: how many of list's values to send (all of them by default).
local function chunked(cmd, key, list, n)
  n = n or #list
  for i = 1, n, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, n)))
  end
end

local function is_live(status)
  return status == 'pending' or status == 'active'
end

-- One item of a call (a task created, a job completed...): its outcome
-- goes back to the caller on its own, so one item's refusal spares the rest.
-- woke: the queues it made jobs due in (a set, and the list replied); task:
-- the task of its first event; progress: what its last step:complete or
-- step:progress reported. Its events go back only where the script sets
-- ANSWER_EVENTS (append.lua): the engine needs no more of a transition
-- than its task and progress, and every host hears the events published.
local NONE = {}
local ANSWER_EVENTS = false
local function begin_item()
  -- Every field it may get, so that the table is made its final size once.
  ITEM = {err = '', finished = '', events = ANSWER_EVENTS and {} or NONE, task = false, progress = false, woke = false,
    woke_list = false}
end

-- ITEMS is flat (see reply()): Redis converts every table of a reply with
-- several lookups (is it an error? a status? ...), which cost more than
-- the values themselves when each item was a table of tables.
local function end_item(err)
  if err then
    ITEM.err = err
  end
  local n = #ITEMS
  local woke, evs = ITEM.woke_list or NONE, ITEM.events
  ITEMS[n + 1] = ITEM.err
  ITEMS[n + 2] = ITEM.finished
  ITEMS[n + 3] = ITEM.task or ''
  ITEMS[n + 4] = ITEM.progress or ''
  ITEMS[n + 5] = #woke
  n = n + 5
  for i = 1, #woke do
    ITEMS[n + i] = woke[i]
  end
  n = n + #woke + 1
  ITEMS[n] = #evs
  for i = 1, #evs do
    ITEMS[n + i] = evs[i]
  end
  ITEM = nil
end

local function wake(queue)
  if ITEM then
    local set = ITEM.woke
    if not set then
      set = {}
      ITEM.woke, ITEM.woke_list = set, {}
    end
    if not set[queue] then
      set[queue] = true
      ITEM.woke_list[#ITEM.woke_list + 1] = queue
    end
  end
end

-- HMGET of any number of fields, in slices (Lua's unpack is limited).
local function hmget_all(key, names)
  if #names <= 1000 then
    return redis.call('HMGET', key, unpack(names))
  end
  local got = {}
  for n = 1, #names, 1000 do
    local r = redis.call('HMGET', key, unpack(names, n, math.min(n + 999, #names)))
    for i = 1, #r do
      got[#got + 1] = r[i]
    end
  end
  return got
end

-- Tasks opened in this call, by id. A task is opened once per call, and
-- every read and write of its hash in the call goes through that entry:
-- its fields (f) are a cache that its own writes keep current, so that a
-- write can wait in w for the task's one HSET of the call (defer) while
-- later jobs of the same task read what it wrote. Opening it again reads
-- only the fields not read yet. A job's own fields on the entry (step,
-- item, token, attempt, stalls) are the last opened job's.
local OPEN = {}
-- Entries with deferred writes, committed by flush_open().
local DIRTY = {}

-- A task being changed: the named fields read (those not read yet in this
-- call, with one HMGET), the writes gathered for one HSET (w, n: its
-- field/value list and length).
local function open_names(id, names)
  local c = OPEN[id]
  if not c then
    -- Nothing read yet: every name (seq first), in one HMGET.
    local key = k('t', id)
    local r = hmget_all(key, names)
    local f = {}
    for i = 1, #names do
      f[names[i]] = r[i]
    end
    if f.seq == nil then
      f.seq = redis.call('HGET', key, 'seq')
    end
    -- Made with every field it may get, and room for its first writes:
    -- a Lua table grows by rehashing all it holds.
    c = {id = id, key = key, f = f, n = 0, seq = tonumber(f.seq or '0'), step = false, item = false, token = false,
      attempt = false, stalls = false, idj = false, emitted = false, dirty = false,
      w = {nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil}}
    OPEN[id] = c
    return c
  end
  local f = c.f
  local miss, m
  for i = 1, #names do
    local n = names[i]
    if f[n] == nil then
      if not miss then
        miss, m = {}, 0
      end
      m = m + 1
      miss[m] = n
      -- Asked for once however often it is named (false: read, absent).
      f[n] = false
    end
  end
  if miss then
    local r = hmget_all(c.key, miss)
    for i = 1, m do
      f[miss[i]] = r[i]
    end
  end
  return c
end

-- The task fields most transitions read, and the caller's own.
local function open(id, fields)
  local names = {'status', 'seq', 'total', 'done', 'pipeline', 'fx', 'parent'}
  for _, f in ipairs(fields) do
    names[#names + 1] = f
  end
  return open_names(id, names)
end

-- A write of the task's, not kept among the fields read (an event: nothing
-- reads it back).
local function write(c, field, value)
  local n = c.n + 2
  local w = c.w
  w[n - 1] = field
  w[n] = value
  c.n = n
end

local function put(c, field, value)
  write(c, field, value)
  c.f[field] = value
end

-- Integers as strings: Lua would format a number as a float (slow, and
-- "1.7e+12" past 14 digits). Small ones (event seqs, tokens, counts) are
-- formatted once per call: string.format is a C printf each time.
local INTS = {}
local function int(n)
  if n >= 0 and n < 1024 then
    local v = INTS[n]
    if not v then
      v = fmt('%d', n)
      INTS[n] = v
    end
    return v
  end
  return fmt('%d', n)
end

-- Records an event. Its data (JSON) may come in up to seven pieces, joined
-- with the rest of the event by one concatenation: Lua interns every string
-- it builds (a copy and a hash), so the hot paths build no partial ones.
local function emit(c, kind, key, task, data, d2, d3, d4, d5, d6, d7)
  c.seq = c.seq + 1
  local seq = int(c.seq)
  if not c.idj then
    c.idj = cjson.encode(c.id)
  end
  local ev = '{"seq":' .. seq .. ',"type":' .. jstr(kind) .. ',"taskId":' .. c.idj
    .. ',"stepId":' .. jstr(key) .. ',"stepTask":' .. jstr(task) .. ',"data":' .. data
    .. (d2 or '') .. (d3 or '') .. (d4 or '') .. (d5 or '') .. (d6 or '') .. (d7 or '')
    .. ',"timestamp":' .. NOWS .. '}'
  write(c, 'e' .. seq, ev)
  c.emitted = true
  EVENTS[#EVENTS + 1] = ev
  if ITEM then
    if not ITEM.task then
      ITEM.task = c.id
    end
    if ANSWER_EVENTS then
      local evs = ITEM.events
      evs[#evs + 1] = ev
    end
  end
end

local function commit(c)
  if c.emitted then
    put(c, 'seq', int(c.seq))
    c.emitted = false
  end
  if c.n > 0 then
    chunked('HSET', c.key, c.w, c.n)
    c.n = 0
  end
end

-- Leaves c's writes for the end of the call, to be one HSET with those of
-- its task's other jobs in the call: most of a DAG's jobs are leased and
-- completed beside their task's other steps, and each command a script
-- runs costs ~10,000 instructions around its own work (docs/benchmarks.md).
local function defer(c)
  if not c.dirty then
    c.dirty = true
    DIRTY[#DIRTY + 1] = c
  end
end

local function flush_open()
  for i = 1, #DIRTY do
    local c = DIRTY[i]
    c.dirty = false
    commit(c)
  end
  DIRTY = {}
end

-- A field of the task, read now unless open() read it already (false:
-- read, and absent).
local function got(c, name)
  local v = c.f[name]
  if v == nil then
    v = redis.call('HGET', c.key, name)
    c.f[name] = v
  end
  return v
end

-- How long a queued job waits to gain one priority level; the same as
-- dwa_store::NEVER, as Rust writes it: a schedule with no tick left.
local NEVER = '9223372036854775807'

-- dwa_store::PRIORITY_AGING_MS (a unit test holds them equal).
local AGING_MS = 10000

-- A due job's place in its queue (dwa_store::rank): lowest is leased first.
local function rank(due_at, prio)
  -- Most jobs are due now at priority 0: their rank is the call's clock
  -- as it came (string.format costs ~1,500 instructions).
  if due_at == NOW and (prio == nil or prio == false or prio == '0' or prio == 0) then
    return NOWS
  end
  return int(due_at - (tonumber(prio) or 0) * AGING_MS)
end

-- Queues a job of a step whose priority is prio (a number, a string, or nil for 0).
local function push_job(id, step, item, queue, run_at, prio)
  local list = QADD[queue]
  if not list then
    list = {due = {}, delayed = {}}
    QADD[queue] = list
  end
  if run_at <= NOW then
    list.due[#list.due + 1] = rank(run_at, prio)
    list.due[#list.due + 1] = jid(id, step, item)
  else
    list.delayed[#list.delayed + 1] = int(run_at)
    list.delayed[#list.delayed + 1] = jid(id, step, item)
  end
  wake(queue)
end

-- Queued jobs are written before anything reads a queue (and at the end).
local function flush_jobs()
  for q, list in pairs(QADD) do
    chunked('ZADD', k('r', q), list.due)
    chunked('ZADD', k('d', q), list.delayed)
  end
  QADD = {}
end

-- Lifecycle lists a task has effects in (field fx: 'p' onPending, 's'
-- onSuccess, 'e' onError); the one its end calls for becomes due in the
-- outbox in the same script (fx_claim.lua).
local FX_ON_END = {completed = {'s', 'onSuccess'}, failed = {'e', 'onError'}}

-- Makes the job of a sub-task's parent (`parent`: its link, JSON) due now,
-- if it still waits for this child.
local function wake_parent(child, parent)
  local link = cjson.decode(parent)
  local step, item = int(link.step), '-1'
  if link.item then
    item = int(link.item)
  end
  local s = F(step)
  local f = open_names(link.taskId, {s.queue, s.prio, s.child}).f
  local queue, waits_for = f[s.queue], f[s.child]
  if item ~= '-1' then
    waits_for = redis.call('HGET', k('it', link.taskId, step), item .. ':child')
  end
  if queue and waits_for == child and redis.call('ZREM', k('d', queue), jid(link.taskId, step, item)) == 1 then
    push_job(link.taskId, step, item, queue, NOW, f[s.prio])
  end
end

local function finish_task(c, status)
  put(c, 'status', status)
  put(c, 'completed', NOWS)
  local parent = got(c, 'parent')
  if parent then
    wake_parent(c.id, parent)
  end
  local fx, has = FX_ON_END[status], got(c, 'fx')
  if fx and has and string.find(has, fx[1], 1, true) then
    redis.call('ZADD', k('outbox'), NOW, c.id .. '|' .. fx[2])
  end
  DONE[#DONE + 1] = {c.id, status}
  if ITEM then
    ITEM.finished = status
  end
end

-- Moves the tasks that ended in this call out of the live index, in one
-- command per index.
local function flush_done()
  if #DONE == 0 then
    return
  end
  local live, by_status, ended = {}, {}, {}
  for _, d in ipairs(DONE) do
    live[#live + 1] = d[1]
    local l = by_status[d[2]]
    if not l then
      l = {}
      by_status[d[2]] = l
    end
    l[#l + 1] = 0
    l[#l + 1] = d[1]
    ended[#ended + 1] = NOWS
    ended[#ended + 1] = d[1]
  end
  chunked('ZREM', k('idx', 'live'), live)
  for s, l in pairs(by_status) do
    chunked('ZADD', k('idx', 's', s), l)
  end
  chunked('ZADD', k('done'), ended)
  DONE = {}
end

-- Milliseconds since a stored start time (0 when it was never set).
local function since(stamp)
  local t = tonumber(stamp or '')
  if not t then
    return '0'
  end
  return int(math.max(0, NOW - t))
end

-- Records a step's result (c must hold its key, task and deps fields) and
-- queues the dependants it completes. `how`, for a step that ends without
-- a result of its own (end_step.lua): its status, error, event kind and
-- the event's first fields ('"reason":"...",').
local function finish_step(c, step, result, how)
  local s = F(step)
  local kind, head, body, sep = 'step:complete', '{"result":', result, ',"progress":'
  if how then
    put(c, s.status, how.status)
    put(c, s.error, how.error)
    kind, head, body, sep = how.kind, '{', how.data, '"progress":'
  else
    put(c, s.status, 'completed')
  end
  put(c, s.result, result)
  put(c, s.completed, NOWS)
  local done = tonumber(c.f.done or '0') + 1
  local total = tonumber(c.f.total)
  put(c, 'done', int(done))
  local pct = num(math.min(100, done * 100 / total))
  put(c, 'progress', pct)
  emit(c, kind, c.f[s.key], c.f[s.task], head, body, sep, pct, ',"duration":', since(got(c, s.started)), '}')
  if ITEM and not how then
    ITEM.progress = pct
  end
  local deps = c.f[s.deps]
  if deps then
    for d in string.gmatch(deps, '%d+') do
      local sd = F(d)
      -- Through the task's entry: its jobs' writes may still be waiting.
      local f = open_names(c.id, per_step(DEP_READ, d, dep_fields)).f
      local w = tonumber(f[sd.waiting] or '0') - 1
      put(c, sd.waiting, int(w))
      if w == 0 and (f[sd.status] or 'pending') == 'pending' then
        push_job(c.id, d, '-1', f[sd.queue], NOW, f[sd.prio])
      end
    end
  end
  if done >= total then
    local final = result
    if step ~= int(total - 1) then
      final = got(c, int(total - 1) .. ':result') or 'null'
    end
    put(c, 'result', final)
    put(c, 'progress', '100')
    finish_task(c, 'completed')
    emit(c, 'pipeline:complete', nil, nil, '{"status":"completed","result":', final, ',"totalDuration":',
      since(got(c, 'started')), '}')
  end
end

-- Ends a task early: pending and running steps are skipped (their jobs die
-- where they are), forEach items are dropped.
local function end_task(c, status, err)
  put(c, 'error', err)
  local total = tonumber(c.f.total)
  local reason = 'aborted: pipeline failed'
  if status == 'cancelled' then
    reason = 'aborted: cancelled'
  end
  local names = {}
  for i = 0, total - 1 do
    names[#names + 1] = i .. ':status'
    names[#names + 1] = i .. ':queue'
    names[#names + 1] = i .. ':itot'
  end
  local stored = hmget_all(c.key, names)
  local items = {}
  -- Queued jobs of the steps that end here, by queue: dropped now (not when
  -- a lease meets them), so queue depths count live jobs only.
  local queued = {}
  for i = 0, total - 1 do
    local name = names[3 * i + 1]
    local st = c.f[name]
    if st == nil or st == false then
      st = stored[3 * i + 1] or 'pending'
    end
    if st == 'pending' or st == 'running' or st == 'waiting' then
      put(c, name, 'skipped')
      put(c, i .. ':completed', NOWS)
      if st == 'running' then
        put(c, i .. ':error', reason)
        items[#items + 1] = k('it', c.id, i)
      end
      local q = stored[3 * i + 2]
      if q then
        local list = queued[q] or {}
        queued[q] = list
        list[#list + 1] = jid(c.id, i, '-1')
        for n = 0, (tonumber(stored[3 * i + 3]) or 0) - 1 do
          list[#list + 1] = jid(c.id, i, n)
        end
      end
    end
  end
  for i = 1, #items, 1000 do
    redis.call('DEL', unpack(items, i, math.min(i + 999, #items)))
  end
  for q, list in pairs(queued) do
    chunked('ZREM', k('r', q), list)
    chunked('ZREM', k('d', q), list)
  end
  finish_task(c, status)
  emit(c, 'pipeline:complete', nil, nil, '{"status":' .. cjson.encode(status) .. ',"error":' .. cjson.encode(err)
    .. ',"totalDuration":' .. since(got(c, 'started')) .. '}')
end

-- Fails a step for good: the task fails, everything else is skipped.
local function fail_step(c, step, item, attempt, err)
  local s = F(step)
  put(c, s.status, 'failed')
  put(c, s.error, err)
  put(c, s.completed, NOWS)
  local item_json = 'null'
  if item ~= '-1' then
    item_json = item
  end
  emit(c, 'step:error', c.f[s.key], c.f[s.task],
    '{"error":' .. cjson.encode(err) .. ',"attempt":' .. attempt .. ',"item":' .. item_json .. '}')
  local task_err = err
  if c.f.pipeline == '1' then
    task_err = 'step ' .. c.f[s.key] .. ' (' .. c.f[s.task] .. ') failed: ' .. err
  end
  end_task(c, 'failed', task_err)
end

-- held: the token stored (a number, 0 for none), not positive when free.
local function next_token(held)
  return 1 - held
end

-- Opens the task of a job held with `token`, with the job's own fields
-- (token, attempt, stalls; for an item job from its item hash); nil when the
-- job is not held (completed, given back, expired and reaped, task ended).
local function open_held(j, token, fields)
  local id, step, item = split_jid(j)
  local s = F(step)
  local want = {s.status, s.key, s.task, 'queue', s.queue, s.prio}
  if item == '-1' then
    want[#want + 1] = s.token
    want[#want + 1] = s.attempt
    want[#want + 1] = s.stalls
  end
  for _, f in ipairs(fields or {}) do
    want[#want + 1] = f
  end
  local c = open(id, want)
  if c.f[s.status] ~= 'running' then
    return nil
  end
  c.step, c.item = step, item
  if item == '-1' then
    c.token, c.attempt, c.stalls = c.f[s.token], c.f[s.attempt] or '1', c.f[s.stalls] or '0'
  else
    local r = redis.call('HMGET', k('it', id, step), item .. ':token', item .. ':attempt', item .. ':stalls', item)
    if r[4] then
      return nil
    end
    c.token, c.attempt, c.stalls = r[1], r[2] or '1', r[3] or '0'
  end
  if token ~= nil and c.token ~= token then
    return nil
  end
  if tonumber(c.token or '0') <= 0 then
    return nil
  end
  return c
end

-- open_held for completing step's own job of task id, opened by
-- prefetch() with DONE_TASK and DONE_READ.
local function open_done(id, step, token)
  local s = F(step)
  local c = OPEN[id]
  local held = c.f[s.token]
  if c.f[s.status] ~= 'running' or held ~= token or tonumber(held or '0') <= 0 then
    return nil
  end
  c.step, c.item, c.token = step, '-1', held
  return c
end

-- For a script about one held job: its task opened, or nil with the item
-- recorded as refused.
local function held_item(j, token, fields)
  begin_item()
  local c = open_held(j, token, fields)
  if not c then
    end_item('LEASE_LOST ' .. j)
  end
  return c
end

-- Writes a job's own field (the task hash for a step job, its item hash for an item).
local function job_put(c, field, value)
  if c.item == '-1' then
    put(c, F(c.step)[field], value)
  else
    redis.call('HSET', k('it', c.id, c.step), c.item .. ':' .. field, value)
  end
end

-- Puts a held job back in its queue, due at run_at, no longer held.
local function give_back(c, j, run_at)
  job_put(c, 'token', int(-tonumber(c.token)))
  redis.call('ZREM', k('a'), j)
  push_job(c.id, c.step, c.item, c.f[c.step .. ':queue'], run_at, c.f[c.step .. ':prio'])
end

-- The job ids of list (list[from], then every stride-th value up to
-- list[upto]) split: their tasks, steps and items, and how many.
local function split_jobs(list, from, stride, upto)
  local ids, steps, items, m = {}, {}, {}, 0
  for n = from, upto, stride do
    m = m + 1
    ids[m], steps[m], items[m] = split_jid(list[n])
  end
  return ids, steps, items, m
end

-- Opens the tasks of step jobs handled together, each with one HMGET of
-- its own fields (task) and its jobs' (read: per_step's cache and
-- builder): jobs of one task are leased side by side (the same rank, sorted
-- by id), and often complete together. Each command a script runs costs
-- ~10,000 instructions around its own work (docs/benchmarks.md).
local function prefetch(ids, steps, items, m, task, cache, read)
  local names, order = {}, {}
  for x = 1, m do
    local id = ids[x]
    if id and items[x] == '-1' then
      local l = names[id]
      if not l then
        l = {unpack(task)}
        names[id] = l
        order[#order + 1] = id
      end
      local fs = per_step(cache, steps[x], read)
      local n = #l
      for y = 1, #fs do
        l[n + y] = fs[y]
      end
    end
  end
  for x = 1, #order do
    open_names(order[x], names[order[x]])
  end
end

-- Ranks the delayed jobs of queue that are due among its due jobs (by
-- when they became due and their step's priority).
local function promote(queue)
  local dk = k('d', queue)
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', NOWS, 'WITHSCORES', 'LIMIT', 0, 1000)
  if #due > 0 then
    local ranked, names = {}, {}
    for n = 1, #due, 2 do
      local j = due[n]
      local id, step = split_jid(j)
      local prio = redis.call('HGET', k('t', id), step .. ':prio')
      ranked[#ranked + 1] = rank(tonumber(due[n + 1]), prio)
      ranked[#ranked + 1] = j
      names[#names + 1] = j
    end
    redis.call('ZADD', k('r', queue), unpack(ranked))
    redis.call('ZREM', dk, unpack(names))
  end
end

-- A leased job for the reply (flat: see reply()), held until until_ms.
local function hand_out(queue, j, attempt, token, until_ms)
  local n = #JOBS
  JOBS[n + 1], JOBS[n + 2], JOBS[n + 3], JOBS[n + 4] = queue, j, attempt, token
  LEASES[#LEASES + 1] = until_ms
  LEASES[#LEASES + 1] = j
end

-- Leases up to max due jobs of queue; dead jobs met on the way are dropped.
local function lease(queue, max, lease_ms)
  flush_jobs()
  promote(queue)
  local qk = k('r', queue)
  local leased = 0
  local until_ms = int(NOW + lease_ms)
  while leased < max do
    local popped = redis.call('ZPOPMIN', qk, max - leased)
    if #popped == 0 then
      break
    end
    local ids, steps, items, m = split_jobs(popped, 1, 2, #popped)
    prefetch(ids, steps, items, m, LEASE_TASK, LEASE_READ, lease_fields)
    for x = 1, m do
      local j, id, step, item = popped[2 * x - 1], ids[x], steps[x], items[x]
      local s = F(step)
      if item == '-1' then
        local c = OPEN[id]
        local st, held = c.f[s.status] or 'pending', tonumber(c.f[s.token] or '0')
        -- Waiting for a retry, a step is still 'running' but not held (a
        -- parked builtin.wait, 'waiting', until its timeout); a forEach step
        -- that handed over to its items is never leased again.
        if is_live(c.f.status) and (st == 'pending' or st == 'running' or st == 'waiting') and not c.f[s.itot]
          and held <= 0 then
          local token = int(next_token(held))
          local attempt = c.f[s.attempt] or '1'
          put(c, s.status, 'running')
          put(c, s.attempts, attempt)
          put(c, s.token, token)
          if not c.f[s.started] then
            put(c, s.started, NOWS)
          end
          -- The first start of any step is the moment the task turns active.
          if not c.f.started then
            put(c, 'started', NOWS)
            put(c, 'status', 'active')
          end
          emit(c, 'step:start', c.f[s.key], c.f[s.task], '{"attempt":', attempt, '}')
          defer(c)
          hand_out(queue, j, attempt, token, until_ms)
          leased = leased + 1
        end
      else
        local f = open_names(id, {'status', s.status}).f
        local ik = k('it', id, step)
        local ri = redis.call('HMGET', ik, item .. ':token', item .. ':attempt', item)
        local held = tonumber(ri[1] or '0')
        if is_live(f.status) and f[s.status] == 'running' and not ri[3] and held <= 0 then
          local token = int(next_token(held))
          redis.call('HSET', ik, item .. ':token', token)
          hand_out(queue, j, ri[2] or '1', token, until_ms)
          leased = leased + 1
        end
      end
    end
  end
  if #LEASES > 2 then
    chunked('ZADD', k('a'), LEASES)
    LEASES = leases()
  end
  return leased
end

-- When the next job of queue is due: now if one is waiting, else the
-- earliest delayed one's time, else -1.
local function next_due(queue)
  if redis.call('ZCARD', k('r', queue)) > 0 then
    return NOW
  end
  local r = redis.call('ZRANGE', k('d', queue), 0, 0, 'WITHSCORES')
  if r[2] then
    return tonumber(r[2])
  end
  return -1
end

-- Writes what the call gathered and answers {items, jobs, number}, both lists
-- flat: per item its error, finished, task, progress, the number of queues
-- it woke and those queues, the number of its events and those events; per
-- job its queue, id, attempt and token.
local function reply(number)
  flush_open()
  flush_jobs()
  flush_done()
  if #EVENTS > 0 then
    redis.call('PUBLISH', P .. ':events', '[' .. table.concat(EVENTS, ',') .. ']')
  end
  return {ITEMS, JOBS, number or -1}
end
