-- renew: lease renewal. For the in-flight entries this worker still owns, reset their idle time
-- (XCLAIM to itself, JUSTID: the delivery count is unchanged) so XAUTOCLAIM never takes them.
-- Ownership is checked first, inside the script, so a worker never steals back an entry already
-- reclaimed by another.
-- KEYS[1] stream  KEYS[2..n+1] job records (same order as the entry ids)
-- ARGV[4] group  ARGV[5] consumer  ARGV[6..n+5] entry ids
-- Returns one code per entry: 0 renewed | 1 lost (no longer this worker's) | 2 renewed, and a
-- cancel was requested. An id given twice is renewed once and answered twice.
local stream, group, consumer = KEYS[1], ARGV[4], ARGV[5]
local entry_ids, records = {}, {}  -- entry i's job record is records[i]
for i = 6, #ARGV do
  entry_ids[#entry_ids + 1] = ARGV[i]
  records[#records + 1] = KEYS[i - 4]
end

local owned = owned_by(stream, group, consumer, entry_ids)
local out = {}
-- XCLAIM stream group consumer min-idle id... JUSTID: the ids must be the last arguments
-- before JUSTID, so the command is built as one table (unpack() expands to all its values
-- only in the last position of a call).
local claim = {'XCLAIM', stream, group, consumer, 0}
local first, seen = #claim, {}
for i, id in ipairs(entry_ids) do
  if owned[id] then
    if not seen[id] then claim[#claim + 1] = id end
    seen[id] = true
    local cancel = redis.call('HGET', records[i], 'cancel_requested') == '1'
    out[#out + 1] = cancel and 2 or 0
  else
    out[#out + 1] = 1
  end
end
if #claim > first then
  claim[#claim + 1] = 'JUSTID'
  redis.call(unpack(claim))
end
return out
