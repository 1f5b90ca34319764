-- The fleet: enrollment, desktop identity, packages, metrics. SQLite dialect; keep it
-- column-for-column equal to ../postgres/0002_fleet.sql.

CREATE TABLE enrollment_tokens (
    token_sha256 TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects (id),
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- What a desktop says of itself once it connects. `instance_uid` is NULL until then:
-- an imported desktop that never connected is one a new enrollment may claim.
-- `ip_addresses` is a JSON array of strings.
ALTER TABLE desktops ADD COLUMN instance_uid TEXT;
ALTER TABLE desktops ADD COLUMN credential_sha256 TEXT;
ALTER TABLE desktops ADD COLUMN hostname TEXT;
ALTER TABLE desktops ADD COLUMN ip_addresses TEXT;
ALTER TABLE desktops ADD COLUMN last_seen_at BIGINT;

CREATE UNIQUE INDEX desktops_by_instance_uid ON desktops (project_id, instance_uid)
    WHERE instance_uid IS NOT NULL;
CREATE UNIQUE INDEX desktops_by_credential ON desktops (credential_sha256)
    WHERE credential_sha256 IS NOT NULL;
-- The imported desktops an enrollment may claim, by case-folded name, oldest first:
-- without it every enrollment would read its whole project.
CREATE INDEX desktops_unclaimed ON desktops (project_id, lower(computer_name), created_at, id)
    WHERE instance_uid IS NULL;

-- `seq` orders packages by publication (SQLite: the rowid), for two published in the
-- same millisecond. The archive comes last: reading the metadata never reads it.
CREATE TABLE packages (
    seq        INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    platform   TEXT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    signature  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    blob       BLOB NOT NULL,
    UNIQUE (name, version, platform)
);

CREATE INDEX packages_latest ON packages (name, platform, created_at, seq);

CREATE TABLE desktop_metrics (
    desktop_id  TEXT PRIMARY KEY REFERENCES desktops (id),
    project_id  TEXT NOT NULL,
    json        TEXT NOT NULL,
    received_at BIGINT NOT NULL
);

-- The scheduler lists the desktops with work waiting several times a second. A WAITING
-- leader is exactly a sub-job with a delivery deadline, so this index, with the desktop
-- in it, answers that without reading the table (and still serves the timeout sweep).
DROP INDEX sub_jobs_deliver_by;
CREATE INDEX sub_jobs_deliver_by ON sub_jobs (deliver_by, desktop_id)
    WHERE deliver_by IS NOT NULL;

-- A job's begin time is now when it was created; jobs not yet begun take that.
UPDATE jobs SET begin_time = created_at WHERE begin_time IS NULL;
