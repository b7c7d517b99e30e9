-- ARGV: P, now, id. The sub-tasks of task `id` that have not ended.
local out = {}
for _, child in ipairs(redis.call('SMEMBERS', k('kids', ARGV[3]))) do
  if is_live(redis.call('HGET', k('t', child), 'status')) then
    out[#out + 1] = child
  end
end
return out
