-- gpu_peak: remember the largest GPU memory peak (MiB) a job of this kind reported, so the next
-- admission estimate for it comes from what was seen rather than from the table.
-- KEYS[1] gpu peaks hash
-- ARGV[4] field "<model_type>:<kind>:<batch_size>"  ARGV[5] peak MiB (integer > 0)
-- Returns {1, peak} raised | {0, stored peak} not above the stored one
local peaks, field, new = KEYS[1], ARGV[4], tonumber(ARGV[5])

local old = tonumber(redis.call('HGET', peaks, field) or '0')
if new <= old then return {0, old} end
redis.call('HSET', peaks, field, new)
return {1, new}
