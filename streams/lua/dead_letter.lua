-- dead_letter: an entry that cannot be parsed as a job (e.g. written by hand) moves to the
-- dead-letter stream with its raw fields; the worker goes on.
-- KEYS[1] stream  KEYS[2] dead stream  KEYS[3] stats
-- ARGV[4] entry_id  ARGV[5] group  ARGV[6] consumer  ARGV[7] reason  ARGV[8] raw fields JSON
-- ARGV[9] dead stream maxlen
-- Returns {0, dead entry id} | {-1, msg} not the owner
local owner, deliveries = owner_of(KEYS[1], ARGV[5], ARGV[4])
if owner ~= ARGV[6] then return fenced(KEYS[3]) end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[9], '*', 'job_id', '',
  'entry_id', ARGV[4], 'stream', KEYS[1], 'reason', ARGV[7], 'deliveries', deliveries,
  'consumer', ARGV[6], 'ts', now_ms(), 'raw', ARGV[8])
ack_delete(KEYS[1], ARGV[5], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'dead_lettered', 1)
return {0, id}
