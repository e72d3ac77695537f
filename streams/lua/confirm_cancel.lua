-- confirm_cancel: a running job stopped at a step boundary after a cancel request.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- KEYS[6] jobs index  KEYS[7] its log stream (a command job's: expires with its events)
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer
-- Returns {-5, msg} when the job's record is gone (entry acked and deleted, nothing written)
--   | {0, 'ok'} | {-1, msg} fenced
-- Event: cancelled
local stream, record, job_events, type_events, stats, index =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local job_id, entry_id, group, consumer = ARGV[4], ARGV[5], ARGV[6], ARGV[7]

local refused = release_entry(stream, group, entry_id, consumer, record, stats)
if refused then return refused end
local ts = now_ms()
write_final(record, job_events, type_events, job_id, 'cancelled', {'cancelled_by', 'request'},
  '{}', ts, logs_of(stream, KEYS[7]))
count_final(stats, stream, index, 'cancelled', 1, ts)
return {0, 'ok'}
