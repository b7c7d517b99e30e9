-- ARGV: P, now, job, token, error
local j, token, err = ARGV[3], ARGV[4], ARGV[5]
check_leased(j, token)
local id, step, item = split_jid(j)
local attempt = tonumber(redis.call('HGET', k('j', j), 'attempt'))
fail_step(id, step, item, attempt, err)
return reply()
