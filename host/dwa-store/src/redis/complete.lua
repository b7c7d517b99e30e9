-- ARGV: P, now, lease_ms, count, then per job: id, token, result (JSON), and
-- the queue to lease a next job from for its worker ('' for none).
-- Jobs are completed in order; each completed one whose worker asked gets
-- the next due job of its queue (the reply's jobs, in the order asked).
local lease_ms = tonumber(ARGV[3])
local wanted, order = {}, {}
local unlease = {}
local count = tonumber(ARGV[4])
local ids, steps, items = split_jobs(ARGV, 5, 4, 4 + 4 * count)
prefetch(ids, steps, items, count, DONE_TASK, DONE_READ, done_fields)
local i = 5
for x = 1, count do
  local j, token, result, want = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  begin_item()
  local id, step, item = ids[x], steps[x], items[x]
  local s = F(step)
  local c
  if item == '-1' then
    c = open_done(id, step, token)
  else
    c = open_held(j, token, {s.deps, s.started, s.itot, s.idone, s.inext})
  end
  if not c then
    end_item('LEASE_LOST ' .. j)
  else
    unlease[#unlease + 1] = j
    if item == '-1' then
      finish_step(c, step, result)
    else
      local ik = k('it', id, step)
      redis.call('HSET', ik, item, result)
      local done = tonumber(c.f[s.idone] or '0') + 1
      local nxt = tonumber(c.f[s.inext] or '0') + 1
      local total = tonumber(c.f[s.itot])
      put(c, s.idone, int(done))
      if nxt <= total then
        put(c, s.inext, int(nxt))
        push_job(id, step, nxt - 1, c.f[s.queue], NOW, c.f[s.prio])
      end
      if done >= total then
        local names = {}
        for n = 0, total - 1 do
          names[#names + 1] = n
        end
        local parts = hmget_all(ik, names)
        for n = 1, #parts do
          parts[n] = parts[n] or 'null'
        end
        redis.call('DEL', ik)
        finish_step(c, step, '[' .. table.concat(parts, ',') .. ']')
      elseif math.floor(done * 100 / total) ~= math.floor((done - 1) * 100 / total) then
        local sd = tonumber(c.f.done or '0')
        local st = tonumber(c.f.total)
        local pct = math.min(100, (sd + done / total) / st * 100)
        pct = num(pct)
        put(c, 'progress', pct)
        emit(c, 'step:progress', c.f[s.key], c.f[s.task],
          '{"done":' .. done .. ',"total":' .. total .. ',"progress":' .. pct .. '}')
        ITEM.progress = pct
      end
    end
    defer(c)
    if want ~= '' then
      if not wanted[want] then
        wanted[want] = 0
        order[#order + 1] = want
      end
      wanted[want] = wanted[want] + 1
    end
    end_item()
  end
end
chunked('ZREM', k('a'), unlease)
for _, q in ipairs(order) do
  lease(q, wanted[q], lease_ms)
end
return reply()
