-- submit: new jobs enter their worker type's streams: one job (POST /jobs/training) or a batch
-- of up to 1,000 (POST /jobs/training/batch), all of one kind and worker type, so all of one
-- hash slot. Each job goes to its priority lane (the normal stream, or its `:high` lane).
-- All or nothing: every job is checked (idempotency, the same key twice in the batch, the
-- queue's room) before anything is written; a refusal writes nothing.
-- The type's maxima (KEYS[6], written by its workers at start: max_retries, max_timeout_s,
-- max_priority) bound what a job asks: a larger max_retries or timeout_s is lowered to the
-- maximum, a high priority where max_priority is 'normal' goes to the normal lane; the entry
-- and the record hold the values that apply. No maxima published: the job's own values.
-- KEYS[1] normal stream  KEYS[2] type events  KEYS[3] jobs index  KEYS[4] stats
-- KEYS[5] high stream  KEYS[6] the type's limits (hash)
-- KEYS[4+3i] record of job i  KEYS[5+3i] its events  KEYS[6+3i] its idempotency key (the
--   type's placeholder key when it has none: every key must be named, in the one slot)
-- ARGV[4] group  ARGV[5] max queued: the length of both lanes past which a submit is refused
--   (-1: no check; the batch was admitted by a check pass over all its slots just before)
-- ARGV[6] mode: 'write', or 'check' (writes nothing; answers what 'write' would)
-- ARGV[7] idempotency ttl s  ARGV[8] e entry fields  ARGV[9] r record-only fields
-- ARGV[10 .. 9+e+r] field names (the entry's, then the record's); the entry's include
--   max_retries, timeout_s and priority ('' or 'high')
-- then per job a block of 2+e+r values: job_id, request fingerprint ('' = no key), values
-- Returns {code, detail, detail2, then per job: flag, job_id, status, queued event id, lane}
--   code 0: every job written (check: would be). flag 0 new (status queued; its event id,
--     '0-1' (see emit_queued), '' in check mode; lane '' normal or 'high') | 1 duplicate:
--     job_id of the earlier job (same Idempotency-Key and request, earlier or in this batch,
--     or a retry of this very call); the caller reads its status and lane (its record's key
--     is not one of KEYS)
--   {-6, i, job_id} job i's key was used for another request (job_id): nothing written
--   {-7, length, new} the lanes hold `length` jobs not finished (acked entries are deleted)
--     and `new` more would pass max queued: nothing written
-- Event: queued {position, worker_type} per new job, in the type's feed only: a job's own
-- events stream (KEYS[5+3i], named so that every key is declared) is not written here; the
-- job's next event creates it. The record keeps `position` (its place in its lane).
local normal_stream, type_events, index, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local high_stream, limits = KEYS[5], KEYS[6]
local H = 3  -- KEYS[H + 3i + 1 .. 3]: job i's record, events, idempotency key
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
  local idem_key = KEYS[H + 3 * i + 3]
  if redis.call('EXISTS', KEYS[H + 3 * i + 1]) == 1 then  -- the client retried this very call
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

-- The type's maxima (nil where its workers published none).
local lim = redis.call('HMGET', limits, 'max_retries', 'max_timeout_s', 'max_priority')
local max_retries, max_timeout, max_priority = tonumber(lim[1]), tonumber(lim[2]), lim[3]

-- An entry value as it applies under the type's maxima.
local function bounded(name, value)
  if value == '' then return value end
  if name == 'max_retries' and max_retries and tonumber(value) > max_retries then
    return tostring(max_retries)
  elseif name == 'timeout_s' and max_timeout and tonumber(value) > max_timeout then
    return tostring(max_timeout)
  elseif name == 'priority' and max_priority == 'normal' then
    return ''
  end
  return value
end

-- Job i's entry values (bounded) and its lane ('' normal, 'high').
local function entry_values(i)
  local at = first + (i - 1) * block
  local values, lane = {}, ''
  for k = 1, e do
    local name = ARGV[names_at + k - 1]
    values[k] = bounded(name, ARGV[at + 1 + k])
    if name == 'priority' then lane = values[k] end
  end
  return values, lane
end

local function lane_stream(lane)
  if lane == 'high' then return high_stream end
  return normal_stream
end

-- The one place a new job is written: its entry, its record, its queued event (feed only).
-- `position`: the job's place among the undelivered entries of its lane, itself included.
local function write_job(i, ts, position, values, lane)
  local at = first + (i - 1) * block
  local job_id = ARGV[at]
  local entry, record, wt = {}, {}, ''
  for k = 1, e do
    entry[#entry + 1] = ARGV[names_at + k - 1]
    entry[#entry + 1] = values[k]
  end
  local entry_id = redis.call('XADD', lane_stream(lane), '*', unpack(entry))
  -- The record leaves out empty values (every reader takes a missing field as empty): a hash
  -- of fewer fields is smaller.
  for k = 1, e + r do
    local name, value = ARGV[names_at + k - 1], values[k] or ARGV[at + 1 + k]
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
  redis.call('HSET', KEYS[H + 3 * i + 1], unpack(record))
  return emit_queued(type_events, job_id,
    cjson.encode({position = position, worker_type = wt}), ts)
end

-- Undelivered entries of a lane: acked entries are deleted, so length - pending.
local function undelivered(stream, length)
  local summary = redis.pcall('XPENDING', stream, group)
  local pending = 0
  if type(summary) == 'table' and not summary.err then pending = tonumber(summary[1]) end
  return length - pending
end

-- Check everything first.
local seen, kinds, ids, new = {}, {}, {}, 0
for i = 1, n do
  local kind, job_id = classify(i, seen)
  if kind == 'conflict' then return {-6, i, job_id} end
  kinds[i], ids[i] = kind, job_id
  if kind == 'new' then new = new + 1 end
end
local normal_len, high_len = redis.call('XLEN', normal_stream), redis.call('XLEN', high_stream)
local length = normal_len + high_len
if max_queued >= 0 and new > 0 and length + new > max_queued then
  return {-7, length, new}
end

-- Then write.
local out, members, ts = {0, '', ''}, {}, now_ms()
local ahead = {}  -- lane -> undelivered entries ahead of the next new job
if mode == 'write' and new > 0 then
  ahead[''] = undelivered(normal_stream, normal_len)
  ahead['high'] = undelivered(high_stream, high_len)
end
local written = 0
for i = 1, n do
  local at = first + (i - 1) * block
  if kinds[i] == 'new' then
    local event_id = ''
    local values, lane = entry_values(i)
    if mode == 'write' then
      written = written + 1
      ahead[lane] = ahead[lane] + 1
      event_id = write_job(i, ts, ahead[lane], values, lane)
      members[#members + 1] = ts
      members[#members + 1] = ids[i]
      if ARGV[at + 1] ~= '' then
        redis.call('HSET', KEYS[H + 3 * i + 3], 'job_id', ids[i], 'fingerprint', ARGV[at + 1])
        redis.call('EXPIRE', KEYS[H + 3 * i + 3], idem_ttl)
      end
    end
    for _, v in ipairs({0, ids[i], 'queued', event_id, lane}) do out[#out + 1] = v end
  else
    for _, v in ipairs({1, ids[i], '', '', ''}) do out[#out + 1] = v end
  end
end
if written > 0 then
  redis.call('ZADD', index, unpack(members))
  count(stats, normal_stream, 'submitted', written)
end
return out
