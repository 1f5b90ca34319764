-- The agents' time series (Cloud Eye namespace AGT.ECS): series, raw points, roll-ups and
-- how far the roll-ups have got. SQLite dialect; keep it column-for-column equal to the
-- PostgreSQL one.

-- One metric of one desktop (and one mount point, for disk metrics). The id is derived
-- from that key by the server, so writers need no lookup.
CREATE TABLE metric_series (
    id          BIGINT PRIMARY KEY,
    project_id  TEXT NOT NULL,
    desktop_id  TEXT NOT NULL,
    metric_name TEXT NOT NULL,
    -- The 32-hex mount point id; '' for metrics without that dimension.
    mount_point TEXT NOT NULL,
    -- The mount path behind mount_point ('' when none).
    origin      TEXT NOT NULL,
    unit        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE INDEX metric_series_list ON metric_series (project_id, metric_name, desktop_id, mount_point);
CREATE INDEX metric_series_desktop ON metric_series (desktop_id);

-- Raw data: the agent's one-minute collection. One row per series and minute starting
-- at `ts`, holding count, sum, sum of squares, min and max of the values reported in that
-- minute (the server aggregates reports in memory and writes a minute once it closed).
-- The time index serves roll-up and retention, which go through time.
CREATE TABLE metric_points (
    series_id BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    sum       REAL NOT NULL,
    sum_sq    REAL NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;

CREATE INDEX metric_points_ts ON metric_points (ts);

-- Roll-ups: count, sum, sum of squares, min and max of the values of one bucket of
-- `period` milliseconds starting at `ts`.
CREATE TABLE metric_rollups (
    series_id BIGINT NOT NULL,
    period    BIGINT NOT NULL,
    ts        BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    sum       REAL NOT NULL,
    sum_sq    REAL NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    PRIMARY KEY (series_id, period, ts)
) WITHOUT ROWID;

CREATE INDEX metric_rollups_ts ON metric_rollups (period, ts);

-- Per roll-up period: every bucket starting before done_until is rolled up.
CREATE TABLE metric_rollup_marks (
    period     BIGINT PRIMARY KEY,
    done_until BIGINT NOT NULL
);
