-- ARGV: P, now. For GET /metrics: per queue of P:queues,
-- {queue, waiting, delayed, head}: jobs due (ranked, and delayed ones due
-- already, which the next lease ranks), jobs due later, and the smallest
-- rank or due time among those waiting ('' when none). The host keeps the
-- deepest queues it shows.
local out = {}
for _, q in ipairs(redis.call('SMEMBERS', k('queues'))) do
  local r, d = k('r', q), k('d', q)
  local due = redis.call('ZCOUNT', d, '-inf', NOW)
  local later = redis.call('ZCARD', d) - due
  local head = nil
  local first = redis.call('ZRANGE', r, 0, 0, 'WITHSCORES')
  if first[2] then
    head = tonumber(first[2])
  end
  if due > 0 then
    local firstd = tonumber(redis.call('ZRANGE', d, 0, 0, 'WITHSCORES')[2])
    if not head or firstd < head then
      head = firstd
    end
  end
  local waiting = redis.call('ZCARD', r) + due
  if waiting + later > 0 then
    out[#out + 1] = {q, waiting, later, head and fmt('%d', head) or ''}
  end
end
return out
