-- Diagnostic: the single-row durable INSERT into scheduler.jobs itself, so
-- with its wake-up trigger (statement-level, transition table, NOTIFY), but
-- without the scheduler.schedule() SQL function.
INSERT INTO scheduler.jobs (name, payload) VALUES ('bench_trigger', '{}');
