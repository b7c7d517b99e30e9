-- ARGV: P, now, id, then triples: kind, step (-1 for none), data(JSON)
local id = ARGV[3]
begin_item()
local fields = {}
for i = 4, #ARGV, 3 do
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
for i = 4, #ARGV, 3 do
  local step = ARGV[i + 1]
  if step == '-1' then
    emit(c, ARGV[i], nil, nil, ARGV[i + 2])
  else
    emit(c, ARGV[i], c.f[step .. ':key'], c.f[step .. ':task'], ARGV[i + 2])
  end
end
commit(c)
end_item()
return reply()
