-- cancel: a client cancels a job. Queued or retrying jobs end at once; a running job is flagged
-- and its worker stops it at the next step boundary (confirm_cancel).
-- KEYS[1] training stream  KEYS[2] inference stream  KEYS[3] record  KEYS[4] job events
-- KEYS[5] type events  KEYS[6] delayed zset  KEYS[7] stats  KEYS[8] jobs index
-- KEYS[9] command stream  KEYS[10] the job's log stream (a command job's: expires with its
-- events)
-- ARGV[4] job_id  ARGV[5] group
-- Returns {0, 'cancelled'} | {1, 'cancel_requested'} | {-4, status} already final
--         {-5, ''} no such job
-- Events: cancelled | cancel_requested
local training, inference, record, job_events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local type_events, delayed, stats, index = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local job_id, group = ARGV[4], ARGV[5]

if redis.call('EXISTS', record) == 0 then return {-5, ''} end
local st = redis.call('HMGET', record, 'status', 'kind', 'entry_id')
local status, kind, entry_id = st[1], st[2], st[3]
if is_final(status) then return {-4, status} end
local ts = now_ms()
if status == 'running' then
  redis.call('HSET', record, 'cancel_requested', '1')
  emit(job_events, type_events, job_id, 'cancel_requested', 'running', '{}', ts)
  return {1, 'cancel_requested'}
end
local stream = training
if kind == 'inference' then stream = inference end
if kind == 'command' then stream = KEYS[9] end
-- Never delivered: remove the entry. Delivered but not started: start acks it.
if status == 'queued' and entry_id and not owner_of(stream, group, entry_id) then
  redis.call('XDEL', stream, entry_id)
end
redis.call('ZREM', delayed, job_id)
write_final(record, job_events, type_events, job_id, 'cancelled', {'cancelled_by', 'request'},
  '{}', ts, logs_of(stream, KEYS[10]))
count_final(stats, stream, index, 'cancelled', 1, ts)
return {0, 'cancelled'}
