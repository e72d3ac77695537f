-- start: the worker that read an entry takes the job (or dead-letters it).
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] dead stream
-- KEYS[6] stats  KEYS[7] jobs index
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] max deliveries
-- ARGV[9] dead-letter stream maxlen
-- Returns {0, deliveries, attempt} started | {-1, msg} not the owner (reclaimed by another)
--         {-2, status} job already final or entry stale: entry acked and deleted
--         {-3, deliveries} delivery limit exceeded: dead-lettered, job failed
--         {-5, deliveries} no record for the job: dead-lettered
-- Events: started {worker, attempt, deliveries, resumed} | failed {error}
local stream, record, job_id, entry_id = KEYS[1], KEYS[2], ARGV[4], ARGV[5]
local group, consumer = ARGV[6], ARGV[7]
local owner, deliveries = owner_of(stream, group, entry_id)
if owner ~= consumer then return fenced(KEYS[6]) end
local ts = now_ms()
local function dead_letter(reason)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'job_id', job_id, 'entry_id', entry_id,
    'stream', stream, 'reason', reason, 'deliveries', deliveries, 'consumer', consumer, 'ts', ts)
  ack_delete(stream, group, entry_id)
  redis.call('HINCRBY', KEYS[6], 'dead_lettered', 1)
end
if redis.call('EXISTS', record) == 0 then
  dead_letter('record_missing')
  return {-5, deliveries}
end
local st = redis.call('HMGET', record, 'status', 'attempt', 'entry_id')
local status, attempt = st[1], tonumber(st[2] or '1')
if status == 'succeeded' or status == 'failed' or status == 'cancelled' or st[3] ~= entry_id then
  ack_delete(stream, group, entry_id)
  return {-2, status or ''}
end
if deliveries > tonumber(ARGV[8]) then
  dead_letter('delivery_limit')
  local err = cjson.encode({code = 'delivery_limit',
    message = 'delivered ' .. deliveries .. ' times without finishing (worker crashes?); ' ..
              'moved to the dead-letter stream', retryable = false})
  redis.call('HSET', record, 'status', 'failed', 'finished_at', ts, 'error', err,
    'deliveries', deliveries)
  redis.call('EXPIRE', record, RETENTION)
  emit(KEYS[3], KEYS[4], job_id, 'failed', 'failed', '{"error":' .. err .. '}', ts)
  redis.call('EXPIRE', KEYS[3], RETENTION)
  redis.call('HINCRBY', KEYS[6], 'failed', 1)
  index_finished(KEYS[7], job_id, ts)
  return {-3, deliveries}
end
redis.call('HSET', record, 'status', 'running', 'worker', consumer, 'deliveries', deliveries,
  'last_started_at', ts)
redis.call('HSETNX', record, 'started_at', ts)
emit(KEYS[3], KEYS[4], job_id, 'started', 'running', cjson.encode({worker = consumer,
  attempt = attempt, deliveries = deliveries, resumed = deliveries > 1}), ts)
return {0, deliveries, attempt}
