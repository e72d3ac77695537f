-- Shared helpers, prepended to every script by streams/scripts.py.
-- Every script's ARGV starts with the same three values:
--   ARGV[1] job_events_maxlen   ARGV[2] type_events_maxlen   ARGV[3] retention_s
local JOB_MAXLEN, TYPE_MAXLEN, RETENTION = ARGV[1], ARGV[2], tonumber(ARGV[3])

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
-- worker type's stream (dashboard fan-out). Returns the job stream's entry id.
local function emit(job_events, type_events, job_id, etype, status, data, ts)
  local id = redis.call('XADD', job_events, 'MAXLEN', '~', JOB_MAXLEN, '*',
    'type', etype, 'job_id', job_id, 'ts', ts, 'status', status, 'data', data)
  redis.call('XADD', type_events, 'MAXLEN', '~', TYPE_MAXLEN, '*',
    'type', etype, 'job_id', job_id, 'ts', ts, 'status', status, 'data', data, 'event_id', id)
  return id
end

local function ack_delete(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

-- Terminal state: the entry leaves the stream, the record and its events expire.
local function index_finished(index, job_id, ts)
  -- The index is scored by the last state change; finished jobs older than the retention
  -- (whose records have expired) are pruned here, so the index stays bounded too.
  redis.call('ZADD', index, ts, job_id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ts - RETENTION * 1000)
end

local function finish(stream, group, entry_id, record, job_events, type_events, stats, index,
                      job_id, status, field, payload, ts)
  ack_delete(stream, group, entry_id)
  redis.call('HSET', record, 'status', status, 'finished_at', ts, field, payload)
  redis.call('EXPIRE', record, RETENTION)
  local data = '{}'
  if field == 'result' or field == 'error' then data = '{"' .. field .. '":' .. payload .. '}' end
  emit(job_events, type_events, job_id, status, status, data, ts)
  redis.call('EXPIRE', job_events, RETENTION)
  redis.call('HINCRBY', stats, status, 1)
  index_finished(index, job_id, ts)
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

local function fenced(stats)
  redis.call('HINCRBY', stats, 'fenced', 1)
  return {-1, 'not the owner of this entry'}
end
