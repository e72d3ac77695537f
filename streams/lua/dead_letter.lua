-- dead_letter: an entry that cannot be parsed as a job (e.g. written by hand) moves to the
-- dead-letter stream with its raw fields; the worker goes on.
-- KEYS[1] stream  KEYS[2] dead stream  KEYS[3] stats
-- ARGV[4] entry_id  ARGV[5] group  ARGV[6] consumer  ARGV[7] reason  ARGV[8] raw fields JSON
-- ARGV[9] dead stream maxlen
-- Returns {0, dead entry id} | {-1, msg} not the owner
local stream, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local entry_id, group, consumer, reason, raw, dead_maxlen =
  ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]

local owner, deliveries = owner_of(stream, group, entry_id)
if owner ~= consumer then return fenced(stats) end
local id = redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'job_id', '',
  'entry_id', entry_id, 'stream', stream, 'reason', reason, 'deliveries', deliveries,
  'consumer', consumer, 'ts', now_ms(), 'raw', raw)
ack_delete(stream, group, entry_id)
count(stats, stream, 'dead_lettered', 1)
return {0, id}
