-- Traces committed with their change but not chained yet (docs/audit.md, "Cost"). On
-- PostgreSQL an audited change inserts its trace here, which locks nothing shared, and the
-- chainer (one replica at a time, under the trace_head row lock) moves the committed
-- traces to `traces` in batches, giving them their seq, prev_hash and hash. SQLite has
-- one writer, so it chains each trace as it is written and leaves this table empty; the
-- table exists there too so that both schemas stay equal. ListTraces reads both tables.
-- `content` is the trace's canonical JSON, as in `traces`.
CREATE TABLE trace_inbox (
    id                    INTEGER PRIMARY KEY,
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
    content               TEXT NOT NULL
);
