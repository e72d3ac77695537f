-- submit: new jobs enter their worker type's stream: one job (POST /jobs/training) or a batch
-- of up to 1,000 (POST /jobs/training/batch), all of one stream, so all of one hash slot.
-- All or nothing: every job is checked (idempotency, the same key twice in the batch, the
-- queue's room) before anything is written; a refusal writes nothing.
-- KEYS[1] stream  KEYS[2] type events  KEYS[3] jobs index  KEYS[4] stats
-- KEYS[2+3i] record of job i  KEYS[3+3i] its events  KEYS[4+3i] its idempotency key (the
--   type's placeholder key when it has none: every key must be named, in the one slot)
-- ARGV[4] group  ARGV[5] max queued: the stream's length past which a submit is refused
--   (-1: no check; the batch was admitted by a check pass over all its slots just before)
-- ARGV[6] mode: 'write', or 'check' (writes nothing; answers what 'write' would)
-- ARGV[7] idempotency ttl s  ARGV[8] e entry fields  ARGV[9] r record-only fields
-- ARGV[10 .. 9+e+r] field names (the entry's, then the record's)
-- then per job a block of 2+e+r values: job_id, request fingerprint ('' = no key), values
-- Returns {code, detail, detail2, then per job: flag, job_id, status, queued event id}
--   code 0: every job written (check: would be). flag 0 new (status queued; its event id,
--     '0-1' (see emit_queued), '' in check mode) | 1 duplicate: job_id of the earlier job
--     (same Idempotency-Key and request, earlier or in this batch, or a retry of this very
--     call); the caller reads its status (its record's key is not one of KEYS)
--   {-6, i, job_id} job i's key was used for another request (job_id): nothing written
--   {-7, length, new} the stream holds `length` jobs not finished (acked entries are deleted)
--     and `new` more would pass max queued: nothing written
-- Event: queued {position, worker_type} per new job, in the type's feed only: a job's own
-- events stream (KEYS[3+3i], named so that every key is declared) is not written here; the
-- job's next event creates it. The record keeps `position` (a replay rebuilds the event).
local stream, type_events, index, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, max_queued, mode = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local idem_ttl, e, r = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local names_at, block = 10, 2 + e + r
local first = names_at + e + r
local n = (#ARGV - first + 1) / block

-- What a job is: 'new', or 'dup' with the earlier job's id, or 'conflict' with it.
-- seen: idempotency key -> {fingerprint, job_id} of the batch's jobs so far.
local function classify(i, seen)
  local at = first + (i - 1) * block
  local job_id, fingerprint = ARGV[at], ARGV[at + 1]
  local idem_key = KEYS[4 + 3 * i]
  if redis.call('EXISTS', KEYS[2 + 3 * i]) == 1 then  -- the client retried this very call
    if fingerprint ~= '' then seen[idem_key] = {fingerprint, job_id} end
    return 'dup', job_id
  end
  if fingerprint == '' then return 'new', job_id end
  local prev = seen[idem_key]
  if not prev then
    local got = redis.call('HMGET', idem_key, 'job_id', 'fingerprint')
    if got[1] then prev = {got[2], got[1]} end
  end
  if prev then
    if prev[1] ~= fingerprint then return 'conflict', prev[2] end
    return 'dup', prev[2]
  end
  seen[idem_key] = {fingerprint, job_id}
  return 'new', job_id
end

-- The one place a new job is written: its entry, its record, its queued event (feed only).
-- `position`: the job's place among the undelivered entries, itself included.
local function write_job(i, ts, position)
  local at = first + (i - 1) * block
  local job_id = ARGV[at]
  local entry, record, wt = {}, {}, ''
  for k = 1, e do
    entry[#entry + 1] = ARGV[names_at + k - 1]
    entry[#entry + 1] = ARGV[at + 1 + k]
  end
  local entry_id = redis.call('XADD', stream, '*', unpack(entry))
  -- The record leaves out empty values (every reader takes a missing field as empty): a hash
  -- of fewer fields is smaller.
  for k = 1, e + r do
    local name, value = ARGV[names_at + k - 1], ARGV[at + 1 + k]
    if value ~= '' then
      record[#record + 1] = name
      record[#record + 1] = value
    end
    if name == 'worker_type' then wt = value end
  end
  for _, v in ipairs({'status', 'queued', 'created_at', ts, 'entry_id', entry_id,
                      'deliveries', 0, 'position', position}) do
    record[#record + 1] = v
  end
  redis.call('HSET', KEYS[2 + 3 * i], unpack(record))
  return emit_queued(type_events, job_id,
    cjson.encode({position = position, worker_type = wt}), ts)
end

-- Check everything first.
local seen, kinds, ids, new = {}, {}, {}, 0
for i = 1, n do
  local kind, job_id = classify(i, seen)
  if kind == 'conflict' then return {-6, i, job_id} end
  kinds[i], ids[i] = kind, job_id
  if kind == 'new' then new = new + 1 end
end
local length = redis.call('XLEN', stream)
if max_queued >= 0 and new > 0 and length + new > max_queued then
  return {-7, length, new}
end

-- Then write.
local out, members, ts = {0, '', ''}, {}, now_ms()
local base = 0
if mode == 'write' and new > 0 then
  -- Acked entries are deleted, so undelivered = length - pending.
  local summary = redis.pcall('XPENDING', stream, group)
  local pending = 0
  if type(summary) == 'table' and not summary.err then pending = tonumber(summary[1]) end
  base = length - pending
end
local written = 0
for i = 1, n do
  local at = first + (i - 1) * block
  if kinds[i] == 'new' then
    local event_id = ''
    if mode == 'write' then
      written = written + 1
      event_id = write_job(i, ts, base + written)
      members[#members + 1] = ts
      members[#members + 1] = ids[i]
      if ARGV[at + 1] ~= '' then
        redis.call('HSET', KEYS[4 + 3 * i], 'job_id', ids[i], 'fingerprint', ARGV[at + 1])
        redis.call('EXPIRE', KEYS[4 + 3 * i], idem_ttl)
      end
    end
    for _, v in ipairs({0, ids[i], 'queued', event_id}) do out[#out + 1] = v end
  else
    for _, v in ipairs({1, ids[i], '', ''}) do out[#out + 1] = v end
  end
end
if written > 0 then
  redis.call('ZADD', index, unpack(members))
  count(stats, stream, 'submitted', written)
end
return out
