-- Taking credentials back, and authentication failures shared by every replica.
-- PostgreSQL dialect; keep it column-for-column equal to ../sqlite/0003_credentials.sql.

-- A disabled user's keys and tokens stop working; 1 = disabled.
ALTER TABLE users ADD COLUMN disabled BIGINT NOT NULL DEFAULT 0;

-- Consecutive failed authentications of one subject: 'ak:<access key>' (bad signatures)
-- or 'user:<user id>' (wrong passwords). `locked_until` is set once `failures` reached
-- the lockout threshold; a row past its lock starts counting afresh.
CREATE TABLE auth_failures (
    subject      TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    locked_until BIGINT
);

-- One row: bumped by every change that takes a credential back or changes what it may
-- do (revocation, disable, delete, role change, lock, unlock). Servers poll it and drop
-- their credential caches when it moves.
CREATE TABLE credential_revision (
    id       BIGINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO credential_revision (id, revision) VALUES (1, 0);

CREATE INDEX tokens_by_user ON tokens (user_id);
CREATE INDEX access_keys_by_user ON access_keys (user_id);
