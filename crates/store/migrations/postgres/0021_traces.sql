-- The audit trail (docs/audit.md). `content` is the trace's canonical JSON, hashed into the
-- chain: hash = SHA-256(prev_hash "\n" seq "\n" content). The other columns repeat what
-- ListTraces filters on; `admin audit verify` checks that they agree with `content`.
CREATE TABLE traces (
    seq                   BIGINT PRIMARY KEY,
    trace_id              TEXT NOT NULL UNIQUE,
    project_id            TEXT NOT NULL,
    at                    BIGINT NOT NULL,
    trace_name            TEXT NOT NULL,
    trace_rating          TEXT NOT NULL,
    service_type          TEXT NOT NULL,
    resource_type         TEXT NOT NULL,
    resource_id           TEXT NOT NULL,
    resource_name         TEXT NOT NULL,
    user_name             TEXT NOT NULL,
    access_key_id         TEXT NOT NULL,
    enterprise_project_id TEXT NOT NULL,
    content               TEXT NOT NULL,
    prev_hash             TEXT NOT NULL,
    hash                  TEXT NOT NULL
);

CREATE INDEX traces_by_project_time ON traces (project_id, at, trace_id);

-- The chain's head (one row): appends read and move it, so they take turns (on PostgreSQL
-- the row lock serialises them). `pruned_seq`/`pruned_hash`: the last trace removed by
-- retention, where the kept chain starts; a seal must vouch for it.
CREATE TABLE trace_head (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    seq         BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    pruned_seq  BIGINT NOT NULL,
    pruned_hash TEXT NOT NULL
);

INSERT INTO trace_head (id, seq, hash, pruned_seq, pruned_hash) VALUES
    (1, 0, '0000000000000000000000000000000000000000000000000000000000000000',
     0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Signed heads of the chain (ed25519 over "deskfleet-trace-seal\n{seq}\n{hash}\n{signed_at}").
CREATE TABLE trace_seals (
    seq        BIGINT PRIMARY KEY,
    hash       TEXT NOT NULL,
    signed_at  BIGINT NOT NULL,
    signature  TEXT NOT NULL,
    public_key TEXT NOT NULL
);
