-- A single row the readiness probe rewrites: the proof that the store can durably write now.
CREATE TABLE store_probe (
    id INTEGER PRIMARY KEY,
    probed_at BIGINT NOT NULL
);
