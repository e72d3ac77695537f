-- fail: the owning worker gives up on the job (bad input, or retries exhausted).
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] stats
-- KEYS[6] jobs index
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] error JSON
-- Returns {0, 'ok'} | {-1, msg} fenced
-- Event: failed {error}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[5]) end
finish(KEYS[1], ARGV[6], ARGV[5], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], ARGV[4],
  'failed', 'error', ARGV[8], now_ms())
return {0, 'ok'}
