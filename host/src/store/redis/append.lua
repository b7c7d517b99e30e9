-- ARGV: P, now, id, then triples: kind, step (-1 for none), data(JSON)
local id = ARGV[3]
if redis.call('EXISTS', k('t', id)) == 0 then
  fail_with('NOT_FOUND', id)
end
for i = 4, #ARGV, 3 do
  local step = tonumber(ARGV[i + 1])
  if step < 0 then
    step = nil
  end
  emit(id, ARGV[i], step, ARGV[i + 2])
end
return reply()
