-- ARGV: P, now, id, spec ('' keeps the stored one), on_error ('1' when the
-- task has onError effects).
-- Runs a failed or cancelled task again from where it stopped: completed
-- steps keep their results; every other step is pending again, waiting for
-- its dependencies that will run again, and the ready ones are queued. A
-- job of the last run still in a queue finds its step pending with a token
-- that no holder has, and is leased at most once with the new one.
local id, spec, on_error = ARGV[3], ARGV[4], ARGV[5] == '1'
begin_item()
local c = open(id, {'runs', 'fx'})
local status = c.f.status
if not status then
  end_item('NOT_FOUND ' .. id)
elseif status ~= 'failed' and status ~= 'cancelled' then
  end_item('CONFLICT task ' .. id .. ' is ' .. status .. ': only a failed or cancelled task can be run again')
else
  local total = tonumber(c.f.total)
  local names = {}
  for i = 0, total - 1 do
    local s = F(i)
    names[#names + 1] = s.status
    names[#names + 1] = s.deps
    names[#names + 1] = s.key
    names[#names + 1] = s.queue
    names[#names + 1] = s.token
    names[#names + 1] = s.prio
  end
  local stored = hmget_all(c.key, names)
  local waiting, again, done = {}, {}, 0
  for i = 0, total - 1 do
    waiting[i] = 0
  end
  for i = 0, total - 1 do
    local st, deps = stored[i * 6 + 1] or 'pending', stored[i * 6 + 2]
    if st == 'completed' then
      done = done + 1
    elseif deps then
      for d in string.gmatch(deps, '%d+') do
        waiting[tonumber(d)] = waiting[tonumber(d)] + 1
      end
    end
  end
  local gone = {}
  for i = 0, total - 1 do
    local st, key, queue, token = stored[i * 6 + 1] or 'pending', stored[i * 6 + 3], stored[i * 6 + 4], stored[i * 6 + 5]
    if st ~= 'completed' then
      local s = F(i)
      put(c, s.status, 'pending')
      put(c, s.waiting, int(waiting[i]))
      put(c, s.token, int(-math.abs(tonumber(token or '0'))))
      for _, f in ipairs({s.result, s.error, s.started, s.completed, s.attempt, s.attempts, s.stalls,
        s.itot, s.idone, s.inext, s.child}) do
        gone[#gone + 1] = f
        c.f[f] = nil
      end
      redis.call('DEL', k('it', id, i))
      if waiting[i] == 0 then
        push_job(id, int(i), '-1', queue, NOW, stored[i * 6 + 6])
      end
      again[#again + 1] = key
    end
  end
  for _, f in ipairs({'error', 'result', 'completed'}) do
    gone[#gone + 1] = f
  end
  chunked('HDEL', c.key, gone)
  put(c, 'status', 'pending')
  put(c, 'done', int(done))
  put(c, 'progress', num(math.min(100, done * 100 / total)))
  if spec ~= '' then
    put(c, 'spec', spec)
  end
  redis.call('ZREM', k('idx', 's', status), id)
  redis.call('ZREM', k('done'), id)
  redis.call('ZADD', k('idx', 'live'), 0, id)
  -- A delivery of the last failure still under way stays as it is; one
  -- already made is owed again (from its first effect) should this run fail.
  if on_error and not redis.call('ZSCORE', k('outbox'), id .. '|onError') then
    redis.call('HDEL', c.key, 'fx:onError:done', 'fx:onError:attempt', 'fx:onError:token')
    if not string.find(c.f.fx or '', 'e', 1, true) then
      put(c, 'fx', (c.f.fx or '') .. 'e')
    end
  end
  local run = tonumber(c.f.runs or '1') + 1
  put(c, 'runs', int(run))
  emit(c, 'task:retry', nil, nil, '{"run":' .. run .. ',"steps":' .. (#again > 0 and cjson.encode(again) or '[]')
    .. ',"payloadChanged":' .. tostring(spec ~= '') .. '}')
  commit(c)
  end_item()
end
return reply()
