-- Package versions can be withdrawn: no longer offered as the newest, and refused for a
-- new install or upgrade, but still served (a desktop may roll back to it).
ALTER TABLE packages ADD COLUMN withdrawn_at BIGINT;
