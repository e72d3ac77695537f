-- handback: a worker shutting down returns a job it will not finish; the job gets a fresh entry
-- at once, so an idle worker picks it up without waiting for the lease to expire.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] reason
-- ARGV[9..] entry field names
-- Returns {0, new entry_id} | {-1, msg} fenced
-- Event: requeued {reason}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[5]) end
local ts = now_ms()
ack_delete(KEYS[1], ARGV[6], ARGV[5])
local names = {}
for i = 9, #ARGV do names[#names + 1] = ARGV[i] end
local entry_id = requeue_from_record(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[4], names,
  ARGV[8], ts)
redis.call('HINCRBY', KEYS[5], 'handed_back', 1)
return {0, entry_id}
