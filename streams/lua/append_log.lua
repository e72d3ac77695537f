-- append_log: the owning worker appends a batch of a command job's output lines to the job's
-- log stream (capped: MAXLEN ~), and tells live readers with ONE small notice in the type's
-- feed (the stream the gateway's hub already follows): followers then read the batch from the
-- log stream, so a burst of lines costs one notice, not one per line.
-- Not a state change; fenced like progress, so a zombie's output is not mixed in.
-- KEYS[1] stream (the job's entry)  KEYS[2] the job's log stream  KEYS[3] type events
-- KEYS[4] stats
-- ARGV[4] job_id  ARGV[5] entry_id  ARGV[6] group  ARGV[7] consumer  ARGV[8] log maxlen
-- ARGV[9 ..] pairs: the line's stream (stdout | stderr | aiq: the worker's own notes), its text
-- Returns {0, first id, last id} | {-1, msg} fenced: nothing written
-- The log stream expires RESULT_TTL_S after its last line (a job's final write sets the
-- shorter EVENTS_TTL_S).
-- Notice: log {first, last, lines} in the type's feed only (no event of the job's own stream)
local stream, logs, type_events, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local job_id, entry_id, group, consumer = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local maxlen = ARGV[8]

if owner_of(stream, group, entry_id) ~= consumer then return fenced(stats) end
local first, last
for i = 9, #ARGV - 1, 2 do
  last = redis.call('XADD', logs, 'MAXLEN', '~', maxlen, '*', 'stream', ARGV[i], 'line',
    ARGV[i + 1])
  first = first or last
end
if not first then return {0, '', ''} end
redis.call('EXPIRE', logs, RETENTION)
local n = (#ARGV - 8) / 2
redis.call('XADD', type_events, 'MAXLEN', '~', TYPE_MAXLEN, '*', 'type', 'log', 'job_id', job_id,
  'ts', now_ms(), 'status', 'running', 'data',
  '{"first":"' .. first .. '","last":"' .. last .. '","lines":' .. n .. '}')
return {0, first, last}
