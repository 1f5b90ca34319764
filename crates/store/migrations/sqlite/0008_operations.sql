-- Operations on the monitoring agent (INSTALL, UPDATE, ROLLBACK, UNINSTALL) and rollout
-- control. SQLite dialect; keep it column-for-column equal to
-- ../postgres/0008_operations.sql.
--
-- Every job and sub-job carries its operation; rows written before this migration are
-- the installs they always were. A sub-job records the version it puts in place
-- (`target_version`, NULL for UNINSTALL and for older rows, which take the newest
-- published version) and the agent version the desktop had when it was created
-- (`current_version`). A ROLLBACK sub-job names the sub-job it undoes (`rollback_of`);
-- that one gets `rolled_back_at` when the ROLLBACK succeeds.
ALTER TABLE jobs ADD COLUMN operation TEXT NOT NULL DEFAULT 'INSTALL';
-- Rollout limits, resolved to counts of the job's targets; NULL is no limit. Once more
-- than `max_errors` sub-jobs failed the job is stopped (`stopped_at`): its sub-jobs not
-- yet started end FAILED and no more start. A job with `max_concurrency` holds the
-- leaders beyond its window WAITING without a delivery deadline (`deliver_by` NULL: not
-- offered, not timing out); the sweep releases them as slots free up, each with the
-- job's delivery timeout (`delivery_ms`).
ALTER TABLE jobs ADD COLUMN max_concurrency BIGINT;
ALTER TABLE jobs ADD COLUMN max_errors BIGINT;
ALTER TABLE jobs ADD COLUMN stopped_at BIGINT;
ALTER TABLE jobs ADD COLUMN delivery_ms BIGINT;

ALTER TABLE sub_jobs ADD COLUMN operation TEXT NOT NULL DEFAULT 'INSTALL';
ALTER TABLE sub_jobs ADD COLUMN target_version TEXT;
ALTER TABLE sub_jobs ADD COLUMN current_version TEXT;
ALTER TABLE sub_jobs ADD COLUMN rollback_of TEXT;
ALTER TABLE sub_jobs ADD COLUMN rolled_back_at BIGINT;

-- A desktop's history (ListAgentInvocations by instance), newest first.
CREATE INDEX sub_jobs_by_desktop ON sub_jobs (desktop_id, created_at, seq);
-- The stopped jobs still in flight, whose sub-jobs not yet started the sweep ends.
CREATE INDEX jobs_stopped ON jobs (id)
    WHERE stopped_at IS NOT NULL AND status IN ('WAITING', 'RUNNING');
-- Held leaders (see above), by job, in the job's order.
CREATE INDEX sub_jobs_held ON sub_jobs (job_id, position)
    WHERE status = 'WAITING' AND follows IS NULL AND deliver_by IS NULL;
