-- ARGV: P, now, queue, owner, max, lease_ms. The reply's number is when the
-- queue's next job is due (-1 when it is empty).
local queue = ARGV[3]
lease(queue, tonumber(ARGV[5]), tonumber(ARGV[6]))
return reply(next_due(queue))
