-- forget_consumer: remove consumers from the group once they hold nothing, so the group's
-- consumer list is the workers that are alive (a worker that stopped, or died and whose entries
-- were all reclaimed). A consumer still holding an entry is kept: XGROUP DELCONSUMER would drop
-- its pending entries, and no worker could ever take them back.
-- KEYS[1] stream
-- ARGV[4] group  ARGV[5..] consumer names
-- Returns, per name: 1 removed (or it was not in the group) | 0 kept: it holds entries
local stream, group = KEYS[1], ARGV[4]

local out = {}
for i = 5, #ARGV do
  local name = ARGV[i]
  local held = redis.pcall('XPENDING', stream, group, '-', '+', 1, name)
  if type(held) == 'table' and not held.err and #held == 0 then
    out[#out + 1] = redis.call('XGROUP', 'DELCONSUMER', stream, group, name) >= 0 and 1 or 0
  else
    out[#out + 1] = 0
  end
end
return out
