-- submit: a new job enters its worker type's stream.
-- KEYS[1] stream  KEYS[2] record  KEYS[3] job events  KEYS[4] type events  KEYS[5] jobs index
-- KEYS[6] idempotency key  KEYS[7] stats
-- ARGV[4] job_id  ARGV[5] idempotency ttl s (0: no key)  ARGV[6] request fingerprint
-- ARGV[7] group  ARGV[8] max queued (the stream's length past which a submit is refused)
-- ARGV[9] n (entry field pairs)  ARGV[10 .. 9+2n] entry pairs  rest: record-only pairs
-- Returns {0, job_id, entry_id, '0-1'} created ('0-1': the queued event's id, see emit_queued)
--         {1, job_id, ''} duplicate of an earlier submit (same Idempotency-Key, or a retry of
--         this call)
--         {-6, job_id, ''} idempotency key reused with a different request
--         {-7, length, ''} the stream holds max queued jobs already (acked entries are deleted,
--         so its length is the jobs not finished): nothing written
-- Event: queued {position, worker_type}, in the type's feed only: KEYS[3] (the job's own events
-- stream) is not written here; the job's next event creates it. The record keeps `position`.
local stream, record_key, job_events, type_events, index, idem_key, stats =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local job_id, idem_ttl, fingerprint, group = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local max_queued, n = tonumber(ARGV[8]), tonumber(ARGV[9])
local idem = idem_ttl ~= '0'

-- The job id is made by the client, so a client-side retry of this very call is a no-op.
if redis.call('EXISTS', record_key) == 1 then return {1, job_id, ''} end
if idem then
  local prev = redis.call('HMGET', idem_key, 'job_id', 'fingerprint')
  if prev[1] then
    if prev[2] ~= fingerprint then return {-6, prev[1], ''} end
    return {1, prev[1], ''}
  end
end
local length = redis.call('XLEN', stream)
if length >= max_queued then return {-7, length, ''} end
local entry, extra = {}, {}
for i = 10, 9 + 2 * n do entry[#entry + 1] = ARGV[i] end
for i = 10 + 2 * n, #ARGV do extra[#extra + 1] = ARGV[i] end
local entry_id = redis.call('XADD', stream, '*', unpack(entry))
local ts = now_ms()
-- The record leaves out empty values (every reader takes a missing field as empty): a hash of
-- fewer fields is smaller.
local record, wt = {}, ''
for _, kv in ipairs({entry, extra}) do
  for i = 1, #kv, 2 do
    if kv[i + 1] ~= '' then
      record[#record + 1] = kv[i]
      record[#record + 1] = kv[i + 1]
    end
    if kv[i] == 'worker_type' then wt = kv[i + 1] end
  end
end
-- Acked entries are deleted, so undelivered = length - pending.
local pending = 0
local summary = redis.pcall('XPENDING', stream, group)
if type(summary) == 'table' and not summary.err then pending = tonumber(summary[1]) end
local position = redis.call('XLEN', stream) - pending
for _, v in ipairs({'status', 'queued', 'created_at', ts, 'entry_id', entry_id,
                    'deliveries', 0, 'position', position}) do
  record[#record + 1] = v
end
redis.call('HSET', record_key, unpack(record))
redis.call('ZADD', index, ts, job_id)
if idem then
  redis.call('HSET', idem_key, 'job_id', job_id, 'fingerprint', fingerprint)
  redis.call('EXPIRE', idem_key, idem_ttl)
end
count(stats, stream, 'submitted', 1)
local event_id = emit_queued(type_events, job_id,
  cjson.encode({position = position, worker_type = wt}), ts)
return {0, job_id, entry_id, event_id}
