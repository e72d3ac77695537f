-- promote: a retrying job whose backoff has passed gets a fresh stream entry.
-- KEYS[1] delayed zset  KEYS[2] stream  KEYS[3] record  KEYS[4] job events  KEYS[5] type events
-- ARGV[4] job_id  ARGV[5..] entry field names
-- Returns {1, entry_id} promoted | {0, ''} not due, or promoted by another worker
--         {-2, status} the job left 'retrying' (cancelled): dropped from the delayed set
-- Event: requeued {reason: 'retry'}
local delayed, stream, record, job_events, type_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id = ARGV[4]
local field_names = {}
for i = 5, #ARGV do field_names[#field_names + 1] = ARGV[i] end

local ts = now_ms()
local due = redis.call('ZSCORE', delayed, job_id)
if not due or tonumber(due) > ts then return {0, ''} end
redis.call('ZREM', delayed, job_id)
local status = redis.call('HGET', record, 'status')
if status ~= 'retrying' then return {-2, status or ''} end
return {1, requeue_from_record(stream, record, job_events, type_events, job_id, field_names,
  'retry', ts)}
