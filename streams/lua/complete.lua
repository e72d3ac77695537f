-- complete: the owning worker finished the job; the entry leaves the stream.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- KEYS[6] jobs index
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] result JSON
-- Returns {0, 'ok'} | {-1, msg} fenced: a zombie's late write, rejected and counted
-- Event: succeeded {result}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[5]) end
finish(KEYS[1], ARGV[6], ARGV[5], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[4],
  'succeeded', 'result', ARGV[8], now_ms())
return {0, 'ok'}
