//! Admission control for authenticated fleet connections: a cap on the connections open
//! at once and on the new ones admitted per second.
//!
//! The cap is a semaphore: every admitted connection (a WebSocket, or an HTTP agent's
//! session between polls) owns one permit for as long as it lives, and gives it back by
//! being dropped, whichever way it ends. Nothing counts connections by hand, so no early
//! return or panic can leak a slot. Only authenticated requests get here: a flood of bad
//! credentials spends no admission.

use crate::settings::FleetSettings;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a connection was not admitted, with the `Retry-After` to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `fleet.max_connections` are open.
    Full,
    /// `fleet.max_new_connections_per_sec` were admitted this second.
    Rate,
}

impl Refused {
    pub fn retry_after_secs(self) -> u64 {
        match self {
            Refused::Full => 5,
            Refused::Rate => 1,
        }
    }
}

#[derive(Default)]
pub struct Admission {
    /// Sized from the settings on first use (the fleet state is built before them).
    slots: OnceLock<Arc<Semaphore>>,
    /// Start of the current one-second window, and how many were admitted in it.
    window: Mutex<Option<(Instant, u32)>>,
}

impl Admission {
    fn slots(&self, settings: &FleetSettings) -> &Arc<Semaphore> {
        self.slots.get_or_init(|| {
            Arc::new(Semaphore::new(
                settings.max_connections.min(Semaphore::MAX_PERMITS),
            ))
        })
    }

    /// Admits one connection: its permit, to be held for the connection's life.
    pub fn admit(&self, settings: &FleetSettings) -> Result<OwnedSemaphorePermit, Refused> {
        let refused = |why: Refused| {
            metrics::counter!("deskfleet_fleet_admission_refused_total").increment(1);
            why
        };
        let permit = self
            .slots(settings)
            .clone()
            .try_acquire_owned()
            .map_err(|_| refused(Refused::Full))?;
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match window.as_mut() {
            Some((start, count)) if now.duration_since(*start) < Duration::from_secs(1) => {
                if *count >= settings.max_new_connections_per_sec {
                    // The permit goes back as it drops here.
                    return Err(refused(Refused::Rate));
                }
                *count += 1;
            }
            _ => *window = Some((now, 1)),
        }
        Ok(permit)
    }

    /// How many connections hold a permit now.
    pub fn open(&self, settings: &FleetSettings) -> usize {
        let slots = self.slots(settings);
        settings
            .max_connections
            .min(Semaphore::MAX_PERMITS)
            .saturating_sub(slots.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max: usize, per_sec: u32) -> FleetSettings {
        FleetSettings {
            max_connections: max,
            max_new_connections_per_sec: per_sec,
            ..FleetSettings::default()
        }
    }

    #[test]
    fn a_permit_is_a_slot_until_it_drops() {
        let admission = Admission::default();
        let s = settings(2, 100);
        let a = admission.admit(&s).unwrap();
        let _b = admission.admit(&s).unwrap();
        assert_eq!(admission.admit(&s).unwrap_err(), Refused::Full);
        assert_eq!(admission.open(&s), 2);
        drop(a);
        assert_eq!(admission.open(&s), 1);
        let _again = admission
            .admit(&s)
            .expect("the dropped permit's slot is free again");
    }

    #[test]
    fn the_rate_bound_holds_within_a_second_and_returns_the_permit() {
        let admission = Admission::default();
        let s = settings(100, 2);
        let _a = admission.admit(&s).unwrap();
        let _b = admission.admit(&s).unwrap();
        assert_eq!(admission.admit(&s).unwrap_err(), Refused::Rate);
        assert_eq!(admission.open(&s), 2, "a refused connection holds no slot");
    }
}
