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
local stream, record, job_events, type_events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, entry_id, group, consumer, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

if owner_of(stream, group, entry_id) ~= consumer then return fenced(stats) end
local st = redis.call('HMGET', record, 'status', 'entry_id', 'waiting')
local status = st[1]
if is_final(status) or st[2] ~= entry_id then
  ack_delete(stream, group, entry_id)
  return {-2, status or ''}
end
if st[3] == reason then return {0, ''} end
-- 'running' here is a job reclaimed from a dead worker: it is not running any more.
redis.call('HSET', record, 'status', 'queued', 'waiting', reason)
local id = emit(job_events, type_events, job_id, 'waiting', 'queued', reason, now_ms())
redis.call('HINCRBY', stats, 'waited', 1)
return {1, id}
