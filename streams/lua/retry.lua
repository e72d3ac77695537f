-- retry: a retryable error; the entry leaves the stream and the job waits out its backoff in the
-- delayed set, from which promote puts it back.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] delayed zset
-- KEYS[6] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] error JSON
-- ARGV[9] delay ms  ARGV[10] overrides JSON for the next attempt ('' or absent: unchanged),
-- e.g. a halved batch_size after CUDA OOM; promote copies it into the fresh entry
-- Returns {0, next attempt} | {-1, msg} fenced
-- Event: retrying {attempt, delay_ms, error[, overrides]}
local owner = owner_of(KEYS[1], ARGV[6], ARGV[5])
if owner ~= ARGV[7] then return fenced(KEYS[6]) end
local ts = now_ms()
ack_delete(KEYS[1], ARGV[6], ARGV[5])
local attempt = redis.call('HINCRBY', KEYS[2], 'attempt', 1)
redis.call('HSET', KEYS[2], 'status', 'retrying', 'error', ARGV[8])
local overrides = ''
if ARGV[10] and ARGV[10] ~= '' then
  redis.call('HSET', KEYS[2], 'overrides', ARGV[10])
  overrides = ',"overrides":' .. ARGV[10]
end
redis.call('ZADD', KEYS[5], ts + tonumber(ARGV[9]), ARGV[4])
emit(KEYS[3], KEYS[4], ARGV[4], 'retrying', 'retrying', '{"attempt":' .. attempt ..
  ',"delay_ms":' .. tonumber(ARGV[9]) .. ',"error":' .. ARGV[8] .. overrides .. '}', ts)
redis.call('HINCRBY', KEYS[6], 'retried', 1)
return {0, attempt}
