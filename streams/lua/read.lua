-- read: a worker takes up to `count` new entries, the high-priority lanes first, with a share
-- kept for the normal lanes so they are never starved. No job changes state here (XREADGROUP
-- only puts entries in this consumer's pending list; start does the rest), but several streams
-- are read in order in one round trip, `count` entries in all (XREADGROUP's own COUNT applies
-- to each stream it names, so one call over every lane could take several times `count`).
-- KEYS[1..h] the high lanes, KEYS[h+1..] the normal lanes (every kind of the type)
-- ARGV[4] group  ARGV[5] consumer  ARGV[6] count  ARGV[7] h
-- ARGV[8] normal first: entries the normal lanes get before any high lane is read (the
--   worker's starvation credit: one per PRIORITY_WEIGHT high entries it took meanwhile)
-- Returns {normal taken first, high taken, then per stream read: stream, its entries as
--   XREADGROUP gives them ({id, {field, value, ...}}, ...)}
local group, consumer = ARGV[4], ARGV[5]
local count, h, normal_first = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local out = {0, 0}
local left = count

-- Read up to `left` entries from KEYS[from..to] in order; how many were read.
local function take(from, to)
  local got = 0
  for i = from, to do
    if left <= 0 then break end
    local reply = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', left,
                             'STREAMS', KEYS[i], '>')
    if reply and reply[1] and #reply[1][2] > 0 then
      local entries = reply[1][2]
      out[#out + 1] = KEYS[i]
      out[#out + 1] = entries
      left = left - #entries
      got = got + #entries
    end
  end
  return got
end

if normal_first > 0 then
  local keep = left
  left = math.min(normal_first, keep)
  out[1] = take(h + 1, #KEYS)
  left = keep - out[1]
end
out[2] = take(1, h)
take(h + 1, #KEYS)
return out
