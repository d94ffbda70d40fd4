-- Reference bulk enqueue in plain SQL (pgbench -D chunk=C): C jobs per
-- statement and commit, into scheduler.jobs (wake-up trigger included).
INSERT INTO scheduler.jobs (name, payload)
SELECT 'bench_bulksql', '{}'::jsonb FROM generate_series(1, :chunk);
