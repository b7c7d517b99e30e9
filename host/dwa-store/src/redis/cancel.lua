-- ARGV: P, now, id
local id = ARGV[3]
begin_item()
local c = open(id, {})
local status = c.f.status
if not status then
  end_item('NOT_FOUND ' .. id)
elseif not is_live(status) then
  end_item('CONFLICT task ' .. id .. ' is already ' .. status)
else
  end_task(c, 'cancelled', 'cancelled')
  commit(c)
  end_item()
end
return reply()
