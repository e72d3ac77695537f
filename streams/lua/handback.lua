-- handback: a worker shutting down returns a job it will not finish; the job gets a fresh entry
-- at once, so an idle worker picks it up without waiting for the lease to expire.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] reason
-- ARGV[9..] entry field names
-- Returns {-5, msg} when the job's record is gone (entry acked and deleted, nothing written)
--   | {0, new entry_id} | {-1, msg} fenced
-- Event: requeued {reason}
local stream, record, job_events, type_events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, entry_id, group, consumer, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local field_names = {}
for i = 9, #ARGV do field_names[#field_names + 1] = ARGV[i] end

local refused = release_entry(stream, group, entry_id, consumer, record, stats)
if refused then return refused end
local new_id = requeue_from_record(stream, record, job_events, type_events, job_id, field_names,
  reason, now_ms())
count(stats, stream, 'handed_back', 1)
return {0, new_id}
