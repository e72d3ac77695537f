-- retry: a retryable error; the entry leaves the stream and the job waits out its backoff in the
-- delayed set, from which promote puts it back. A job's own max_retries (record field, '' or
-- absent: unbounded here, the worker's MAX_RETRIES bounds it) is enforced here as well: a retry
-- asked for past it fails the job instead, so a buggy or old worker cannot exceed it.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] delayed zset
-- KEYS[6] stats  KEYS[7] the job's result key  KEYS[8] jobs index
-- KEYS[9] its log stream (a command job's: kept across attempts, expires when the job ends)
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] error JSON
-- ARGV[9] delay ms  ARGV[10] overrides JSON for the next attempt ('' or absent: unchanged),
-- e.g. a halved batch_size after CUDA OOM; promote copies it into the fresh entry
-- Returns {-5, msg} when the job's record is gone (entry acked and deleted, nothing written)
--   | {0, next attempt} | {1, attempt} refused: the job failed (max_retries spent)
--   | {-1, msg} fenced
-- Event: retrying {attempt, delay_ms, error[, overrides]} | failed {error}
local stream, record, job_events, type_events, delayed, stats, result, index =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local job_id, entry_id, group, consumer, err = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local delay_ms, overrides = tonumber(ARGV[9]), ARGV[10] or ''

-- The error of a job whose retry was refused: not retryable, saying why.
local function spent(attempt, max_retries)
  local ok, e = pcall(cjson.decode, err)
  if not ok or type(e) ~= 'table' then return err end
  e.retryable = false
  e.message = tostring(e.message or '') .. ' (gave up after ' .. attempt ..
    ' attempts: the job\'s max_retries is ' .. max_retries .. ')'
  return cjson.encode(e)
end

local refused = release_entry(stream, group, entry_id, consumer, record, stats)
if refused then return refused end
local ts = now_ms()
local st = redis.call('HMGET', record, 'attempt', 'max_retries')
local current, max_retries = tonumber(st[1] or '1') or 1, tonumber(st[2] or '')
if max_retries and current >= max_retries + 1 then
  local final = spent(current, max_retries)
  write_final(record, job_events, type_events, job_id, 'failed', {}, '{"error":' .. final .. '}',
    ts, logs_of(stream, KEYS[9]))
  redis.call('SET', result, final, 'EX', RETENTION)
  count_final(stats, stream, index, 'failed', 1, ts)
  return {1, current}
end
local attempt = redis.call('HINCRBY', record, 'attempt', 1)
redis.call('HSET', record, 'status', 'retrying', 'error', err)
local overrides_json = ''
if overrides ~= '' then
  redis.call('HSET', record, 'overrides', overrides)
  overrides_json = ',"overrides":' .. overrides
end
redis.call('ZADD', delayed, ts + delay_ms, job_id)
emit(job_events, type_events, job_id, 'retrying', 'retrying', '{"attempt":' .. attempt ..
  ',"delay_ms":' .. delay_ms .. ',"error":' .. err .. overrides_json .. '}', ts)
count(stats, stream, 'retried', 1)
return {0, attempt}
