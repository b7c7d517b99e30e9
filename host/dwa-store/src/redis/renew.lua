-- ARGV: P, now, lease_ms, then pairs: job, token. The reply's items say,
-- per job, whether it is still held ('' when held).
local until_ms = int(NOW + tonumber(ARGV[3]))
local held = leases()
for i = 4, #ARGV, 2 do
  local j, token = ARGV[i], ARGV[i + 1]
  begin_item()
  if open_held(j, token) then
    held[#held + 1] = until_ms
    held[#held + 1] = j
    end_item()
  else
    end_item('LEASE_LOST ' .. j)
  end
end
if #held > 2 then
  chunked('ZADD', k('a'), held)
end
return reply()
