-- The web console's sign-in sessions, and the index its jobs list reads. Same in both
-- dialects; keep this file equal to its twin in the other migrations folder.
--
-- A session is stored under the SHA-256 of the random id its cookie carries, never the id
-- itself: a copy of the database does not sign anyone in. `last_seen_at` drives the idle
-- expiry, `expires_at` is the absolute end; both are checked by the server on every
-- request, and stale rows are deleted by the server as it meets them.
CREATE TABLE console_sessions (
    id_sha256    TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    project_id   TEXT NOT NULL REFERENCES projects (id),
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);

CREATE INDEX console_sessions_by_user ON console_sessions (user_id);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

-- The console lists a project's jobs newest first.
CREATE INDEX jobs_by_project ON jobs (project_id, created_at);
