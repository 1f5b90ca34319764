-- Desktop-bound enrollment tokens. SQLite dialect; keep it column-for-column equal to
-- ../postgres/0004_enrollment_binding.sql.
--
-- A token with a `desktop_id` may claim that one imported desktop (never connected) and
-- nothing else; the claim spends it (`used_at`). A token without one is project-wide: it
-- only ever enrolls new desktops.
ALTER TABLE enrollment_tokens ADD COLUMN desktop_id TEXT REFERENCES desktops (id);
ALTER TABLE enrollment_tokens ADD COLUMN used_at BIGINT;
-- Project-wide tokens no longer claim imported desktops by name: nothing looks them up.
DROP INDEX IF EXISTS desktops_unclaimed;
