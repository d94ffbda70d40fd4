-- The single-row durable INSERT ceiling: one row per transaction (commit =
-- WAL flush), into bench.jobs (same shape and indexes as scheduler.jobs, no
-- wake-up trigger).
INSERT INTO bench.jobs (name, payload) VALUES ('bench_insert', '{}');
