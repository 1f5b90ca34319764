-- The inbox is a queue: each trace is deleted within a second of its insert, so under a
-- steady load it leaves as many dead rows as it takes traces. Vacuum it by the number of
-- dead rows, not by a share of the few live ones, and without the cost delay, so that
-- its pages are reused instead of growing between autovacuum rounds.
ALTER TABLE trace_inbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0
);
