-- deskfleet schema, SQLite dialect. Keep it column-for-column equal to
-- ../postgres/0001_init.sql: the same queries run against both.
-- Times are BIGINT milliseconds since the Unix epoch; flags are BIGINT 0/1;
-- tags are JSON text.

CREATE TABLE domains (
    id   TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE projects (
    id        TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES domains (id),
    name      TEXT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    domain_id     TEXT NOT NULL REFERENCES domains (id),
    name          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    UNIQUE (domain_id, name)
);

CREATE TABLE roles (
    user_id    TEXT NOT NULL REFERENCES users (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    role       TEXT NOT NULL,
    PRIMARY KEY (user_id, project_id)
);

CREATE TABLE access_keys (
    access_key TEXT PRIMARY KEY,
    secret_key TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    project_id TEXT NOT NULL REFERENCES projects (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    project_id   TEXT NOT NULL REFERENCES projects (id),
    issued_at    BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- No foreign key to projects: desktops are registered by project id, which the
-- server has already authorised; the store does not second-guess it.
CREATE TABLE desktops (
    id                    TEXT PRIMARY KEY,
    project_id            TEXT NOT NULL,
    computer_name         TEXT NOT NULL,
    ip_address            TEXT NOT NULL,
    os_type               TEXT NOT NULL,
    status                TEXT NOT NULL,
    enterprise_project_id TEXT NOT NULL,
    tags                  TEXT NOT NULL,
    created_at            BIGINT NOT NULL,
    agent_version         TEXT,
    agent_healthy         BIGINT,
    agent_reported_at     BIGINT
);

CREATE INDEX desktops_by_project ON desktops (project_id, created_at, id);

CREATE TABLE jobs (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL,
    job_type       TEXT NOT NULL,
    status         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    begin_time     BIGINT,
    end_time       BIGINT,
    error_code     TEXT,
    fail_reason    TEXT,
    sub_jobs_total BIGINT NOT NULL
);

-- `seq` orders sub-jobs by creation (SQLite: the rowid). `position` is the
-- sub-job's place in its job's desktop list. `deliver_by` is set only on a
-- WAITING leader and `execute_by` only on a RUNNING leader, so the two partial
-- indexes below hold exactly the rows the timeout sweep may have to fail.
CREATE TABLE sub_jobs (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    project_id  TEXT NOT NULL,
    desktop_id  TEXT NOT NULL REFERENCES desktops (id),
    position    BIGINT NOT NULL,
    status      TEXT NOT NULL,
    stage       TEXT NOT NULL,
    process     BIGINT NOT NULL,
    error_code  TEXT,
    fail_reason TEXT,
    created_at  BIGINT NOT NULL,
    begin_time  BIGINT,
    end_time    BIGINT,
    deliver_by  BIGINT,
    execute_by  BIGINT,
    follows     TEXT,
    attempts    BIGINT NOT NULL
);

CREATE INDEX sub_jobs_by_job ON sub_jobs (job_id, position);
CREATE INDEX sub_jobs_by_project ON sub_jobs (project_id, created_at, seq);
-- At most one install in flight per desktop: every other in-flight sub-job of
-- that desktop follows it.
CREATE UNIQUE INDEX sub_jobs_one_leader ON sub_jobs (desktop_id)
    WHERE status IN ('WAITING', 'RUNNING') AND follows IS NULL;
CREATE INDEX sub_jobs_followers ON sub_jobs (follows, created_at, seq)
    WHERE status IN ('WAITING', 'RUNNING') AND follows IS NOT NULL;
CREATE INDEX sub_jobs_finished ON sub_jobs (desktop_id, end_time, seq)
    WHERE status IN ('SUCCESS', 'FAILED');
CREATE INDEX sub_jobs_deliver_by ON sub_jobs (deliver_by) WHERE deliver_by IS NOT NULL;
CREATE INDEX sub_jobs_execute_by ON sub_jobs (execute_by) WHERE execute_by IS NOT NULL;
