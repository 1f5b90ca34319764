-- A desktop's connection, as its guest's messages and disconnects tell it. SQLite dialect;
-- keep it column-for-column equal to ../postgres/0007_connection.sql.
--
-- `connected_at`: when the connection that holds the desktop now was established; NULL
-- while no connection holds it. `disconnected_at`: when its last connection ended; NULL
-- while connected or if it never connected. `last_seen_at` (0002) is when a message of
-- the guest last arrived (written in batches, so up to a few seconds behind).
--
-- Online-ness is never stored: a desktop is online when `connected_at` is set AND it was
-- seen within three heartbeat intervals, decided when it is read. A server or a guest
-- that dies without a goodbye leaves `connected_at` set, but the desktop still goes
-- offline once it has not been seen for that long.
ALTER TABLE desktops ADD COLUMN connected_at BIGINT;
ALTER TABLE desktops ADD COLUMN disconnected_at BIGINT;
