-- ARGV: P, now, queue, owner, max, lease_ms, want_next_due (1/0)
local jobs = lease(ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
local next_due = -1
if ARGV[7] == '1' then
  local r = redis.call('ZRANGE', k('q', ARGV[3]), 0, 0, 'WITHSCORES')
  if r[2] then
    next_due = tonumber(r[2])
  end
end
return reply(jobs, next_due)
