-- ARGV: P, now, job, token, result(JSON), then to lease the next job: queue ('' for none), owner, lease_ms
local j, token, result = ARGV[3], ARGV[4], ARGV[5]
check_leased(j, token)
drop_job(j)
local id, step, item = split_jid(j)
if item < 0 then
  finish_step(id, step, result)
else
  local s = k('s', id, step)
  redis.call('HSET', k('it', id, step), item, result)
  local done = redis.call('HINCRBY', s, 'idone', 1)
  local nxt = redis.call('HINCRBY', s, 'inext', 1)
  local total = tonumber(redis.call('HGET', s, 'itot'))
  if nxt <= total then
    push_job(id, step, nxt - 1, redis.call('HGET', s, 'queue'), NOW, 1)
  end
  if done >= total then
    local parts = {}
    local it = k('it', id, step)
    for i = 0, total - 1 do
      parts[#parts + 1] = redis.call('HGET', it, i) or 'null'
    end
    redis.call('DEL', it)
    finish_step(id, step, '[' .. table.concat(parts, ',') .. ']')
  elseif math.floor(done * 100 / total) ~= math.floor((done - 1) * 100 / total) then
    local t = k('t', id)
    local sd = tonumber(redis.call('HGET', t, 'done'))
    local st = tonumber(redis.call('HGET', t, 'total'))
    local pct = math.min(100, (sd + done / total) / st * 100)
    redis.call('HSET', t, 'progress', pct)
    emit(id, 'step:progress', step, '{"done":' .. done .. ',"total":' .. total .. ',"progress":' .. num(pct) .. '}')
  end
end
local jobs = {}
if ARGV[6] ~= '' then
  jobs = lease(ARGV[6], ARGV[7], 1, tonumber(ARGV[8]))
end
return reply(jobs)
