-- progress: the owning worker reports progress of a running job.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] progress JSON
-- Returns {0, cancel_requested (0|1)} | {-1, msg} fenced: the entry is no longer this worker's
-- Event: progress {stage, percent, epoch, step, loss, metrics, eta_s, …}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[5]) end
local ts = now_ms()
redis.call('HSET', KEYS[2], 'progress', ARGV[8])
emit(KEYS[3], KEYS[4], ARGV[4], 'progress', 'running', ARGV[8], ts)
local cancel = redis.call('HGET', KEYS[2], 'cancel_requested') == '1' and 1 or 0
return {0, cancel}
