-- wait: a worker holds a delivered entry unstarted because the job's GPU memory estimate does
-- not fit yet (GPU admission). The job stays queued; its events say why, once per change of
-- reason: the reason is stored in the record's `waiting` field and an event is written only when
-- it differs (it names the worker and the entry, so another delivery waits afresh). The worker
-- calls this at every admission check of the entry, so a job cancelled or superseded meanwhile
-- is let go here. A job reclaimed from a dead worker that waits is queued again. The lease is
-- renewed by `renew`, as for running jobs.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] reason JSON
-- Returns {0, ''} reason unchanged | {1, event id} reason changed: event written
--         {-1, msg} fenced: not this consumer's entry (reclaimed by another worker)
--         {-2, status} the job is final, or the entry is stale: entry acked and deleted
-- Event: waiting {reason, message, worker, needed_mb, estimate_source, devices, behind}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[5]) end
local st = redis.call('HMGET', KEYS[2], 'status', 'entry_id', 'waiting')
local status = st[1]
if status == 'succeeded' or status == 'failed' or status == 'cancelled' or st[2] ~= ARGV[5]
then
  ack_delete(KEYS[1], ARGV[6], ARGV[5])
  return {-2, status or ''}
end
if st[3] == ARGV[8] then return {0, ''} end
-- 'running' here is a job reclaimed from a dead worker: it is not running any more.
redis.call('HSET', KEYS[2], 'status', 'queued', 'waiting', ARGV[8])
local id = emit(KEYS[3], KEYS[4], ARGV[4], 'waiting', 'queued', ARGV[8], now_ms())
redis.call('HINCRBY', KEYS[5], 'waited', 1)
return {1, id}
