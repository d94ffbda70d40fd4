-- Diagnostic: scheduler.schedule() called from SQL, one job per transaction
-- (the SQL function plus the wake-up trigger, without the Lua client).
SELECT scheduler.schedule('bench_sqlsched', '{}'::jsonb);
