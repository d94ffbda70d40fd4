-- The raw claim-and-delete ceiling (pgbench -D n=BATCH), in the form of
-- issue 3: one statement claims the n first due rows in claim order,
-- skipping rows other clients hold, and deletes them: one row write per
-- job.  bench.jobs has the shape and the indexes of scheduler.jobs
-- (CREATE TABLE ... (LIKE scheduler.jobs INCLUDING ALL)).
-- Beware: from n = a few hundred on, the planner may turn `id IN (...)` into
-- a hash semi-join over a sequential scan of the whole table (see
-- claim_delete_any.sql); run.lua measures both forms and takes the faster.
DELETE FROM bench.jobs WHERE id IN (
  SELECT id FROM bench.jobs
  WHERE state = 'scheduled' AND run_at <= now()
  ORDER BY priority, run_at, id
  LIMIT :n
  FOR UPDATE SKIP LOCKED);
