-- ARGV: P, now, then pairs: job, token. Held jobs go back to their queue
-- untouched (same attempt); the reply's number is how many.
local n = 0
for i = 3, #ARGV, 2 do
  local j, token = ARGV[i], ARGV[i + 1]
  local c = open_held(j, token)
  if c then
    give_back(c, j, NOW)
    commit(c)
    n = n + 1
  end
end
return reply(n)
