-- complete: the owning worker finished these jobs; their entries leave the stream.
-- One call for a batch of jobs of one stream (see finish_batch in _common.lua).
-- KEYS[1] stream  KEYS[2] type events  KEYS[3] stats  KEYS[4] jobs index
-- KEYS[1+4i] record of job i  KEYS[2+4i] its events  KEYS[3+4i] its result     (i = 1 .. n)
-- KEYS[4+4i] its log stream (a command job's; expires with its events)
-- ARGV[4] group  ARGV[5] consumer
-- ARGV[3+3i] job_id of job i  ARGV[4+3i] its entry id  ARGV[5+3i] its result (JSON)
-- Returns, per job: 0 accepted | -1 fenced (a zombie's late write: rejected and counted)
-- Event: succeeded {result}
return finish_batch('succeeded', 'result')
