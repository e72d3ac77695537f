-- renew: lease renewal. For the in-flight entries this worker still owns, reset their idle time
-- (XCLAIM to itself, JUSTID: the delivery count is unchanged) so XAUTOCLAIM never takes them.
-- Ownership is checked first, inside the script, so a worker never steals back an entry already
-- reclaimed by another.
-- KEYS[1] stream  KEYS[2..n+1] job records (same order as the entry ids)
-- ARGV[4] group  ARGV[5] consumer  ARGV[6..n+5] entry ids
-- Returns one code per entry: 0 renewed | 1 lost (no longer this worker's) | 2 renewed, and a
-- cancel was requested
local batch_ids = {}
for i = 6, #ARGV do batch_ids[#batch_ids + 1] = ARGV[i] end
local owned = owned_by(KEYS[1], ARGV[4], ARGV[5], batch_ids)
local out, mine = {}, {}
for i = 6, #ARGV do
  local id = ARGV[i]
  if owned[id] then
    mine[#mine + 1] = id
    local cancel = redis.call('HGET', KEYS[i - 4], 'cancel_requested') == '1'
    out[#out + 1] = cancel and 2 or 0
  else
    out[#out + 1] = 1
  end
end
if #mine > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[4], ARGV[5], 0, unpack(mine), 'JUSTID')
end
return out
