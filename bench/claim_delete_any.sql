-- The same claim-and-delete as claim_delete.sql, written so that the plan
-- cannot depend on table statistics: the claimed ids become an array, and
-- the DELETE looks them up through the primary key (no join to plan).
DELETE FROM bench.jobs WHERE id = ANY (ARRAY(
  SELECT id FROM bench.jobs
  WHERE state = 'scheduled' AND run_at <= now()
  ORDER BY priority, run_at, id
  LIMIT :n
  FOR UPDATE SKIP LOCKED));
