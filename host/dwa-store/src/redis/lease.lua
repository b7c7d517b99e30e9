-- ARGV: P, now, queue, max, lease_ms. The reply's number is when the
-- queue's next job is due (-1 when it is empty).
local queue = ARGV[3]
lease(queue, tonumber(ARGV[4]), tonumber(ARGV[5]))
return reply(next_due(queue))
