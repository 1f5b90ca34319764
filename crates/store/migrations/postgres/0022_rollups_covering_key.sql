-- Metric reads (ShowMetricData, BatchListMetricData) fetch a series' buckets of one period
-- over a time range, and need every column of them. The roll-up worker writes every
-- series' current bucket every five minutes, so a series' buckets end up on as many heap
-- pages as it has buckets: a day of 10 series was up to 2,880 page reads. Carrying the
-- figures in the primary key lets PostgreSQL answer from the index alone (an index-only
-- scan, once autovacuum has marked the pages all-visible), where a series' buckets lie
-- together in key order. The key itself, and so ON CONFLICT (series_id, period, ts), is
-- unchanged. SQLite needs no counterpart: it meets the read goals with its plain key.
ALTER TABLE metric_rollups DROP CONSTRAINT metric_rollups_pkey;
ALTER TABLE metric_rollups ADD CONSTRAINT metric_rollups_pkey
    PRIMARY KEY (series_id, period, ts) INCLUDE (n, sum, sum_sq, min, max);
