-- Shared helpers, prepended to every script by streams/scripts.py.
-- Every script's ARGV starts with the same three values:
--   ARGV[1] job_events_maxlen   ARGV[2] type_events_maxlen
--   ARGV[3] retention: '<result ttl s>:<events ttl s>' (a finished job's record, and its events
--           stream, expire after these; a bare number is both, as before EVENTS_TTL_S existed)
local JOB_MAXLEN, TYPE_MAXLEN = ARGV[1], ARGV[2]
local RETENTION, EVENTS_TTL = string.match(ARGV[3], '^(%d+):?(%d*)$')
RETENTION = tonumber(RETENTION)
EVENTS_TTL = math.min(tonumber(EVENTS_TTL) or RETENTION, RETENTION)

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Consumer that owns a pending entry and its delivery count; false when it is not pending
-- (acked, deleted, or the group does not exist).
local function owner_of(stream, group, id)
  local p = redis.pcall('XPENDING', stream, group, id, id, 1)
  if type(p) ~= 'table' or p.err or #p == 0 then return false, 0 end
  return p[1][2], tonumber(p[1][4])
end

-- One event, written to the job's own stream (SSE replay, resume by id) and to the
-- worker type's stream (dashboard fan-out). The type's stream is capped by count, so it also
-- bounds bytes: an event's data larger than FEED_DATA_MAX goes there as {} with truncated=1
-- (readers that need it, e.g. SSE, read the whole event from the job's stream by event_id).
-- Returns the job stream's entry id.
-- A job's stream is created by its first event after `queued` (see emit_queued), so a job that
-- waits in the queue costs no stream of its own (a stream costs ~4.8 KB however short it is).
local FEED_DATA_MAX = 4096
local function emit(job_events, type_events, job_id, etype, status, data, ts)
  local id = redis.call('XADD', job_events, 'MAXLEN', '~', JOB_MAXLEN, '*',
    'type', etype, 'job_id', job_id, 'ts', ts, 'status', status, 'data', data)
  if #data > FEED_DATA_MAX then
    redis.call('XADD', type_events, 'MAXLEN', '~', TYPE_MAXLEN, '*',
      'type', etype, 'job_id', job_id, 'ts', ts, 'status', status, 'data', '{}',
      'event_id', id, 'truncated', '1')
  else
    redis.call('XADD', type_events, 'MAXLEN', '~', TYPE_MAXLEN, '*',
      'type', etype, 'job_id', job_id, 'ts', ts, 'status', status, 'data', data, 'event_id', id)
  end
  return id
end

-- The `queued` event of a submit goes to the type's feed only, under this id: no job stream
-- entry has a lower one, so an SSE replay puts the event (rebuilt from the record's created_at,
-- worker_type and position: streams/events.py) first, and Last-Event-ID 0-1 resumes after it.
local QUEUED_EVENT_ID = '0-1'
local function emit_queued(type_events, job_id, data, ts)
  redis.call('XADD', type_events, 'MAXLEN', '~', TYPE_MAXLEN, '*',
    'type', 'queued', 'job_id', job_id, 'ts', ts, 'status', 'queued', 'data', data,
    'event_id', QUEUED_EVENT_ID)
  return QUEUED_EVENT_ID
end

-- The lowest and highest of stream entry ids ('-', '+' when one is not an id): the range an
-- XPENDING for a batch needs to look at.
local function id_range(ids)
  local lo, hi, lo_ms, lo_seq, hi_ms, hi_seq
  for _, id in ipairs(ids) do
    local ms, seq = string.match(id, '^(%d+)-(%d+)$')
    if not ms then return '-', '+' end
    ms, seq = tonumber(ms), tonumber(seq)
    if not lo or ms < lo_ms or (ms == lo_ms and seq < lo_seq) then lo, lo_ms, lo_seq = id, ms, seq end
    if not hi or ms > hi_ms or (ms == hi_ms and seq > hi_seq) then hi, hi_ms, hi_seq = id, ms, seq end
  end
  return lo or '-', hi or '+'
end

-- Entry ids this consumer owns in the group's pending list -> their delivery counts: one
-- XPENDING for a whole batch instead of one per entry, over the batch's id range only (not the
-- consumer's whole pending list).
local function owned_by(stream, group, consumer, ids)
  local owned = {}
  if #ids == 0 then return owned end
  local lo, hi = id_range(ids)
  local p = redis.pcall('XPENDING', stream, group, lo, hi, 1000000, consumer)
  if type(p) == 'table' and not p.err then
    for _, e in ipairs(p) do owned[e[1]] = tonumber(e[4]) end
  end
  return owned
end

local function ack_delete(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

local FINAL = {succeeded = true, failed = true, cancelled = true}

-- Whether a job in this status is over (no transition leaves it).
local function is_final(status)
  return FINAL[status] == true
end

-- The jobs index is scored by creation time (submit). Entries older than the retention are
-- pruned when jobs finish, so the index stays bounded like the records it points to.
local function prune_index(index, ts)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ts - RETENTION * 1000)
end

-- The one terminal write of a job: status, finished_at, the final event's id and `fields`
-- ({name, value, ...}) in its record, its final event with `data`. The record is kept for the
-- result TTL from now, the events stream for the (shorter) events TTL; once that expired, a
-- replay rebuilds the final event from the record, under its own id (final_event_id).
-- `job_logs` (a command job's log stream, or nil) expires with the events.
local function write_final(record, job_events, type_events, job_id, status, fields, data, ts,
                           job_logs)
  local id = emit(job_events, type_events, job_id, status, status, data, ts)
  redis.call('HSET', record, 'status', status, 'finished_at', ts, 'final_event_id', id,
    unpack(fields))
  redis.call('EXPIRE', record, RETENTION)
  redis.call('EXPIRE', job_events, EVENTS_TTL)
  if job_logs then redis.call('EXPIRE', job_logs, EVENTS_TTL) end
end

-- The stats hash counts each outcome per worker type (`succeeded`) and per kind of job as
-- well (`training:succeeded`, `inference:succeeded`: /metrics' aiq_jobs_total). The kind is read
-- off the stream's name, <prefix>:<kind>:{<type>}:queue (streams/keys.py; the prefix has no ':').
local function kind_of(stream)
  return string.match(stream, '^[^:]+:([^:]+):') or 'unknown'
end

local function count(stats, stream, field, n)
  redis.call('HINCRBY', stats, field, n)
  redis.call('HINCRBY', stats, kind_of(stream) .. ':' .. field, n)
end

-- n jobs of `stream` became final in `status`: counted in the stats, and the jobs index pruned.
local function count_final(stats, stream, index, status, n, ts)
  count(stats, stream, status, n)
  prune_index(index, ts)
end

-- A fresh entry for the job, copied from its record (retry promotion and graceful hand-back).
-- field_names: the entry's fields, in order.
local function requeue_from_record(stream, record, job_events, type_events, job_id,
                                   field_names, reason, ts)
  local values = redis.call('HMGET', record, unpack(field_names))
  local entry = {}
  for i, name in ipairs(field_names) do
    entry[#entry + 1] = name
    entry[#entry + 1] = values[i] or ''
  end
  local entry_id = redis.call('XADD', stream, '*', unpack(entry))
  redis.call('HSET', record, 'status', 'queued', 'entry_id', entry_id)
  emit(job_events, type_events, job_id, 'requeued', 'queued', cjson.encode({reason = reason}), ts)
  return entry_id
end

-- The job's record is gone (deleted by hand, or expired): a script must not write a partial
-- one. The entry leaves the stream; the caller answers -5.
local function record_gone(record)
  return redis.call('EXISTS', record) == 0
end

local function fenced(stats)
  redis.call('HINCRBY', stats, 'fenced', 1)
  return {-1, 'not the owner of this entry'}
end

-- A single-job ending (retry, handback, confirm_cancel) takes the entry off the stream: nil
-- when the caller owns it and the job's record is there (go on and write it), else the reply to
-- return: fenced (nothing done), or the record is gone (the entry dropped, nothing written).
local function release_entry(stream, group, entry_id, consumer, record, stats)
  if owner_of(stream, group, entry_id) ~= consumer then return fenced(stats) end
  ack_delete(stream, group, entry_id)
  if record_gone(record) then return {-5, 'the job record is gone'} end
  return nil
end

-- A command job's log stream (its key is named in KEYS for every kind; only a command job has
-- one): nil for the other kinds, so they pay no EXPIRE.
local function logs_of(stream, key)
  if kind_of(stream) == 'command' then return key end
  return nil
end

-- complete and fail: many jobs of one stream in one call. The result (or error) goes to the
-- job's result key, not to its record: a hash with any value over 64 bytes is stored as a
-- hashtable (hash-max-listpack-value), several times the size of the listpack it is otherwise.
-- KEYS[1] stream  KEYS[2] type events  KEYS[3] stats  KEYS[4] jobs index
-- KEYS[1+4i] record of job i  KEYS[2+4i] its events  KEYS[3+4i] its result key
-- KEYS[4+4i] its log stream (command jobs: expires with the events)
-- ARGV[4] group  ARGV[5] consumer  ARGV[3+3i] job_id  ARGV[4+3i] entry id  ARGV[5+3i] payload
-- Returns per job: 0 accepted | -1 fenced (not this consumer's entry: rejected, counted)
--   | -5 the job's record is gone: its entry is acked and deleted, nothing written
local function finish_batch(status, field)
  local stream, type_events, stats, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
  local group, consumer = ARGV[4], ARGV[5]
  local n, ts = (#KEYS - 4) / 4, now_ms()
  local batch_ids = {}
  for i = 1, n do batch_ids[i] = ARGV[4 + 3 * i] end
  local owned = owned_by(stream, group, consumer, batch_ids)
  local out, ids = {}, {}
  for i = 1, n do
    local job_id, entry_id, payload = ARGV[3 + 3 * i], ARGV[4 + 3 * i], ARGV[5 + 3 * i]
    local record = KEYS[1 + 4 * i]
    if owned[entry_id] and record_gone(record) then
      owned[entry_id] = nil
      ack_delete(stream, group, entry_id)
      out[i] = -5
    elseif owned[entry_id] then
      owned[entry_id] = nil  -- the same entry twice in one batch: only the first counts
      ids[#ids + 1] = entry_id
      write_final(record, KEYS[2 + 4 * i], type_events, job_id, status, {},
        '{"' .. field .. '":' .. payload .. '}', ts, logs_of(stream, KEYS[4 + 4 * i]))
      redis.call('SET', KEYS[3 + 4 * i], payload, 'EX', RETENTION)
      out[i] = 0
    else
      out[i] = -1
    end
  end
  if #ids > 0 then
    redis.call('XACK', stream, group, unpack(ids))
    redis.call('XDEL', stream, unpack(ids))
    count_final(stats, stream, index, status, #ids, ts)
  end
  local fenced_n = 0
  for _, code in ipairs(out) do if code == -1 then fenced_n = fenced_n + 1 end end
  if fenced_n > 0 then redis.call('HINCRBY', stats, 'fenced', fenced_n) end
  return out
end
