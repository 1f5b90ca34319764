//! Whether a desktop is online, told from what the store keeps of its connection.
//!
//! Online-ness is derived when it is read, never stored: a desktop is online while a
//! connection holds it AND its guest was seen within the freshness window (three
//! heartbeat intervals). A server or a guest that dies without a goodbye leaves the
//! connection recorded, but the desktop goes offline once that window has passed, so
//! nothing stays "online" forever.

use crate::clock::Millis;

/// What the store keeps of a desktop's connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connection {
    /// When the connection that holds the desktop now was established; `None` while no
    /// connection holds it.
    pub connected_at: Option<Millis>,
    /// When its last connection ended; `None` while connected or if it never connected.
    pub disconnected_at: Option<Millis>,
    /// When a message of its guest last arrived (batched: a few seconds behind at most).
    pub last_seen_at: Option<Millis>,
}

/// A desktop's connection state at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Connected, and seen within the freshness window.
    Online { since: Millis, last_seen: Millis },
    /// It connected once, but is not connected now, or has been silent past the window.
    Offline {
        since: Millis,
        last_seen: Option<Millis>,
    },
    /// Its guest never connected.
    Never,
}

impl Connection {
    /// The presence at `now`, with `window_ms` the freshness window.
    pub fn presence(&self, now: Millis, window_ms: Millis) -> Presence {
        let seen = self.last_seen_at;
        match (self.connected_at, seen) {
            (Some(since), Some(last)) if last >= now - window_ms => Presence::Online {
                since,
                last_seen: last,
            },
            // Connected but silent: gone since it was last seen.
            (Some(since), _) => Presence::Offline {
                since: seen.unwrap_or(since).max(since),
                last_seen: seen,
            },
            (None, _) => match self.disconnected_at.or(seen) {
                Some(since) => Presence::Offline {
                    since,
                    last_seen: seen,
                },
                None => Presence::Never,
            },
        }
    }
}

impl Presence {
    pub fn is_online(&self) -> bool {
        matches!(self, Presence::Online { .. })
    }

    /// `online`, `offline` or `never`: the `connection_state` of the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Presence::Online { .. } => "online",
            Presence::Offline { .. } => "offline",
            Presence::Never => "never",
        }
    }

    pub fn last_seen(&self) -> Option<Millis> {
        match *self {
            Presence::Online { last_seen, .. } => Some(last_seen),
            Presence::Offline { last_seen, .. } => last_seen,
            Presence::Never => None,
        }
    }
}

/// An instant and the freshness window that apply to one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub now: Millis,
    pub window_ms: Millis,
}

impl Freshness {
    pub fn presence(&self, c: &Connection) -> Presence {
        c.presence(self.now, self.window_ms)
    }

    /// A desktop not seen since this instant is not online.
    pub fn cutoff(&self) -> Millis {
        self.now - self.window_ms
    }
}

/// The freshness window for a heartbeat interval: three intervals.
pub fn window_ms(heartbeat_secs: u64) -> Millis {
    3 * 1000 * heartbeat_secs.max(1) as Millis
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Millis = 3_000;

    #[test]
    fn never_connected() {
        assert_eq!(Connection::default().presence(10_000, W), Presence::Never);
    }

    #[test]
    fn online_while_seen_within_the_window() {
        let c = Connection {
            connected_at: Some(1_000),
            disconnected_at: None,
            last_seen_at: Some(8_000),
        };
        assert_eq!(
            c.presence(11_000, W),
            Presence::Online {
                since: 1_000,
                last_seen: 8_000
            }
        );
        // One millisecond past three intervals: offline, since it was last seen.
        assert_eq!(
            c.presence(11_001, W),
            Presence::Offline {
                since: 8_000,
                last_seen: Some(8_000)
            }
        );
    }

    #[test]
    fn offline_since_the_disconnect() {
        let c = Connection {
            connected_at: None,
            disconnected_at: Some(9_000),
            last_seen_at: Some(8_500),
        };
        assert_eq!(
            c.presence(9_100, W),
            Presence::Offline {
                since: 9_000,
                last_seen: Some(8_500)
            }
        );
    }

    #[test]
    fn seen_before_connections_were_recorded_counts_as_offline() {
        let c = Connection {
            connected_at: None,
            disconnected_at: None,
            last_seen_at: Some(5),
        };
        assert!(matches!(
            c.presence(6, W),
            Presence::Offline { since: 5, .. }
        ));
    }
}
