-- start: the worker that read a batch of entries (of one stream) takes their jobs, or
-- dead-letters them.
-- KEYS[1] stream  KEYS[2] type events  KEYS[3] dead stream  KEYS[4] stats  KEYS[5] jobs index
-- KEYS[4+2i] record of job i  KEYS[5+2i] its events                      (i = 1 .. n)
-- ARGV[4] group  ARGV[5] consumer  ARGV[6] max deliveries  ARGV[7] dead-letter stream maxlen
-- ARGV[6+2i] job_id of job i  ARGV[7+2i] its entry id
-- Returns, per job, {code, detail, attempt}:
--   {0, deliveries, attempt, inputs} started; inputs: the record's inline rows (JSON, or ''):
--                                        they are stored once, in the record, not in the entry
--   {-1, msg, 0} not the owner (reclaimed by another worker)
--   {-2, status, 0} job already final or entry stale: entry acked and deleted
--   {-3, deliveries, 0} delivery limit exceeded, or a malformed record: dead-lettered, job
--                          failed
--   {-5, deliveries, 0} no record for the job: dead-lettered
-- Events: started {worker, attempt, deliveries, resumed} | failed {error}
local stream, type_events, dead, stats, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local group, consumer, max_deliveries, dead_maxlen = ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local ts = now_ms()

local function dead_letter(job_id, entry_id, deliveries, reason)
  redis.call('XADD', dead, 'MAXLEN', '~', dead_maxlen, '*', 'job_id', job_id, 'entry_id', entry_id,
    'stream', stream, 'reason', reason, 'deliveries', deliveries, 'consumer', consumer, 'ts', ts)
  ack_delete(stream, group, entry_id)
  count(stats, stream, 'dead_lettered', 1)
end

local batch_ids = {}
for i = 1, (#KEYS - 5) / 2 do batch_ids[i] = ARGV[7 + 2 * i] end
local owned = owned_by(stream, group, consumer, batch_ids)

local function start_one(record, job_events, job_id, entry_id)
  local deliveries = owned[entry_id]
  if not deliveries then
    redis.call('HINCRBY', stats, 'fenced', 1)
    return {-1, 'not the owner of this entry', 0}
  end
  owned[entry_id] = nil
  local st = redis.call('HMGET', record, 'status', 'attempt', 'entry_id', 'started_at', 'waiting',
    'inputs')
  if not st[1] then  -- the record was deleted (or expired): what is left of the job goes too
    dead_letter(job_id, entry_id, deliveries, 'record_missing')
    redis.call('EXPIRE', job_events, EVENTS_TTL)
    redis.call('ZREM', index, job_id)
    return {-5, deliveries, 0}
  end
  local status, attempt = st[1], tonumber(st[2] or '1')
  if not attempt then  -- a record edited by hand: this entry goes, the rest of the batch flows
    dead_letter(job_id, entry_id, deliveries, 'record_malformed')
    local err = cjson.encode({code = 'record_malformed', retryable = false,
      message = "the job's record is malformed (its attempt is not a number)"})
    write_final(record, job_events, type_events, job_id, 'failed', {'error', err, 'attempt', 1},
      '{"error":' .. err .. '}', ts)  -- attempt 1: the record is readable again
    count_final(stats, stream, index, 'failed', 1, ts)
    return {-3, deliveries, 0}
  end
  if is_final(status) or st[3] ~= entry_id then
    ack_delete(stream, group, entry_id)
    return {-2, status or '', 0}
  end
  if deliveries > max_deliveries then
    dead_letter(job_id, entry_id, deliveries, 'delivery_limit')
    local err = cjson.encode({code = 'delivery_limit',
      message = 'delivered ' .. deliveries .. ' times without finishing (worker crashes?); ' ..
                'moved to the dead-letter stream', retryable = false})
    write_final(record, job_events, type_events, job_id, 'failed',
      {'error', err, 'deliveries', deliveries}, '{"error":' .. err .. '}', ts)
    count_final(stats, stream, index, 'failed', 1, ts)
    return {-3, deliveries, 0}
  end
  redis.call('HSET', record, 'status', 'running', 'worker', consumer, 'deliveries', deliveries,
    'last_started_at', ts, 'started_at', st[4] or ts)
  if st[5] then  -- GPU admission's reason to wait (wait.lua) is over
    redis.call('HDEL', record, 'waiting')
  end
  emit(job_events, type_events, job_id, 'started', 'running', cjson.encode({worker = consumer,
    attempt = attempt, deliveries = deliveries, resumed = deliveries > 1}), ts)
  return {0, deliveries, attempt, st[6] or ''}
end

local out = {}
for i = 1, (#KEYS - 5) / 2 do
  out[i] = start_one(KEYS[4 + 2 * i], KEYS[5 + 2 * i], ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
return out
