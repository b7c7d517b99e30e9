-- ARGV: P, now, after, limit. Up to `limit` schedules with ids after
-- `after` ('' for the first page), in id order, as
-- {id, spec, paused, next, state, created}.
local from = '-'
if ARGV[3] ~= '' then
  from = '(' .. ARGV[3]
end
local rows = {}
for _, id in ipairs(redis.call('ZRANGEBYLEX', k('schedules'), from, '+', 'LIMIT', 0, tonumber(ARGV[4]))) do
  local f = redis.call('HMGET', k('sch', id), 'spec', 'paused', 'next', 'state', 'created')
  if f[1] then
    rows[#rows + 1] = {id, f[1], f[2], f[3], f[4], f[5]}
  end
end
return rows
