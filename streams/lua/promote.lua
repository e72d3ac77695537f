-- promote: a retrying job whose backoff has passed gets a fresh stream entry.
-- KEYS[1] delayed zset  KEYS[2] stream  KEYS[3] record  KEYS[4] job events  KEYS[5] type events
-- ARGV[4] job_id  ARGV[5..] entry field names
-- Returns {1, entry_id} promoted | {0, ''} not due, or promoted by another worker
--         {-2, status} the job left 'retrying' (cancelled): dropped from the delayed set
-- Event: requeued {reason: 'retry'}
local ts = now_ms()
local due = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not due or tonumber(due) > ts then return {0, ''} end
redis.call('ZREM', KEYS[1], ARGV[4])
local status = redis.call('HGET', KEYS[3], 'status')
if status ~= 'retrying' then return {-2, status or ''} end
local names = {}
for i = 5, #ARGV do names[#names + 1] = ARGV[i] end
local entry_id = requeue_from_record(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[4], names,
  'retry', ts)
return {1, entry_id}
