-- progress: the owning worker reports progress of a running job.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] progress JSON
-- Returns {0, cancel_requested (0|1)} | {-1, msg} fenced: the entry is no longer this worker's
--         {-5, msg} the job's record is gone: nothing written
-- Event: progress {stage, percent, epoch, step, loss, metrics, eta_s, ...}
local stream, record, job_events, type_events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, entry_id, group, consumer, report = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

if owner_of(stream, group, entry_id) ~= consumer then return fenced(stats) end
if record_gone(record) then return {-5, 'the job record is gone'} end
redis.call('HSET', record, 'progress', report)
emit(job_events, type_events, job_id, 'progress', 'running', report, now_ms())
local cancel = redis.call('HGET', record, 'cancel_requested') == '1' and 1 or 0
return {0, cancel}
