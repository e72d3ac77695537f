-- cancel: a client cancels a job. Queued or retrying jobs end at once; a running job is flagged
-- and its worker stops it at the next step boundary (confirm_cancel).
-- KEYS[1] record  KEYS[2] job events  KEYS[3] type events  KEYS[4] delayed zset  KEYS[5] stats
-- KEYS[6] jobs index  KEYS[7] the job's log stream (a command job's: expires with its events)
-- KEYS[8..] the type's streams (every kind and lane: the job's is picked by its record's kind
--   and priority)
-- ARGV[4] job_id  ARGV[5] group
-- Returns {0, 'cancelled'} | {1, 'cancel_requested'} | {-4, status} already final
--         {-5, ''} no such job
-- Events: cancelled | cancel_requested
local record, job_events, type_events = KEYS[1], KEYS[2], KEYS[3]
local delayed, stats, index = KEYS[4], KEYS[5], KEYS[6]
local job_id, group = ARGV[4], ARGV[5]

-- The stream of a job of `kind` in lane `priority` ('' or 'high') among KEYS[8..].
local function stream_of(kind, priority)
  local high = priority == 'high'
  for i = 8, #KEYS do
    local s = KEYS[i]
    if kind_of(s) == kind and (string.sub(s, -5) == ':high') == high then return s end
  end
  return KEYS[8]
end

if redis.call('EXISTS', record) == 0 then return {-5, ''} end
local st = redis.call('HMGET', record, 'status', 'kind', 'entry_id', 'priority')
local status, kind, entry_id = st[1], st[2], st[3]
if is_final(status) then return {-4, status} end
local ts = now_ms()
if status == 'running' then
  redis.call('HSET', record, 'cancel_requested', '1')
  emit(job_events, type_events, job_id, 'cancel_requested', 'running', '{}', ts)
  return {1, 'cancel_requested'}
end
local stream = stream_of(kind, st[4])
-- Never delivered: remove the entry. Delivered but not started: start acks it.
if status == 'queued' and entry_id and not owner_of(stream, group, entry_id) then
  redis.call('XDEL', stream, entry_id)
end
redis.call('ZREM', delayed, job_id)
write_final(record, job_events, type_events, job_id, 'cancelled', {'cancelled_by', 'request'},
  '{}', ts, logs_of(stream, KEYS[7]))
count_final(stats, stream, index, 'cancelled', 1, ts)
return {0, 'cancelled'}
