-- cancel: a client cancels a job. Queued or retrying jobs end at once; a running job is flagged
-- and its worker stops it at the next step boundary (confirm_cancel).
-- KEYS[1] training stream  KEYS[2] inference stream  KEYS[3] record  KEYS[4] job events
-- KEYS[5] type events  KEYS[6] delayed zset  KEYS[7] stats  KEYS[8] jobs index
-- ARGV[4] job_id  ARGV[5] group
-- Returns {0, 'cancelled'} | {1, 'cancel_requested'} | {-4, status} already final
--         {-5, ''} no such job
-- Events: cancelled | cancel_requested
local record, job_id = KEYS[3], ARGV[4]
if redis.call('EXISTS', record) == 0 then return {-5, ''} end
local st = redis.call('HMGET', record, 'status', 'kind', 'entry_id')
local status = st[1]
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return {-4, status}
end
local ts = now_ms()
if status == 'running' then
  redis.call('HSET', record, 'cancel_requested', '1')
  emit(KEYS[4], KEYS[5], job_id, 'cancel_requested', 'running', '{}', ts)
  return {1, 'cancel_requested'}
end
local stream = KEYS[1]
if st[2] == 'inference' then stream = KEYS[2] end
-- Never delivered: remove the entry. Delivered but not started: start acks it.
if status == 'queued' and st[3] and not owner_of(stream, ARGV[5], st[3]) then
  redis.call('XDEL', stream, st[3])
end
redis.call('ZREM', KEYS[6], job_id)
redis.call('HSET', record, 'status', 'cancelled', 'finished_at', ts, 'cancelled_by', 'request')
redis.call('EXPIRE', record, RETENTION)
emit(KEYS[4], KEYS[5], job_id, 'cancelled', 'cancelled', '{}', ts)
redis.call('EXPIRE', KEYS[4], RETENTION)
redis.call('HINCRBY', KEYS[7], 'cancelled', 1)
prune_index(KEYS[8], ts)
return {0, 'cancelled'}
