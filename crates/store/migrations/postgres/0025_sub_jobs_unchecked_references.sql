-- A sub-job's job and desktop are no longer checked by foreign keys. Each check is a
-- query of its own, run for every sub-job inserted, that also locks the job's and the
-- desktop's rows: measured under the API benchmark, they were half of a sub-job insert's
-- cost (59 microseconds a row with them, 28 without) and a third of PostgreSQL's time
-- per install. What they guaranteed holds without them:
-- - a sub-job is inserted only in the transaction that inserts its job, and no job is
--   ever deleted;
-- - a job creation share-locks the rows of the desktops it names before it reads them
--   (`ops::create_jobs`), and deleting a desktop locks its row exclusively and deletes
--   its sub-jobs first, in one transaction: a creation either commits before the
--   deletion begins (whose DELETE then takes its sub-jobs too) or reads the desktop
--   after it is gone and fails with "unknown desktop".
-- SQLite keeps the keys: with one writer, they cost a look-up each in the same process.
ALTER TABLE sub_jobs
    DROP CONSTRAINT sub_jobs_job_id_fkey,
    DROP CONSTRAINT sub_jobs_desktop_id_fkey;
