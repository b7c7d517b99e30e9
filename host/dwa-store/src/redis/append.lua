-- ARGV: P, now, id, cap, then triples: kind, step (-1 for none), data(JSON)
-- Events are recorded while the task has fewer than `cap`; the first one
-- past it becomes one `events:capped` event (field `capped` remembers it).
local id = ARGV[3]
local cap = tonumber(ARGV[4])
-- The caller answers the events it appended.
ANSWER_EVENTS = true
begin_item()
local fields = {'capped'}
for i = 5, #ARGV, 3 do
  if ARGV[i + 1] ~= '-1' then
    fields[#fields + 1] = ARGV[i + 1] .. ':key'
    fields[#fields + 1] = ARGV[i + 1] .. ':task'
  end
end
local c = open(id, fields)
if not c.f.status then
  end_item('NOT_FOUND ' .. id)
  return reply()
end
if not c.f.capped then
  for i = 5, #ARGV, 3 do
    if c.seq >= cap then
      emit(c, 'events:capped', nil, nil, '{"limit":' .. int(cap) .. '}')
      put(c, 'capped', '1')
      break
    end
    local step = ARGV[i + 1]
    if step == '-1' then
      emit(c, ARGV[i], nil, nil, ARGV[i + 2])
    else
      emit(c, ARGV[i], c.f[step .. ':key'], c.f[step .. ':task'], ARGV[i + 2])
    end
  end
end
commit(c)
end_item()
return reply()
