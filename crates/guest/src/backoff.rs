//! Jittered exponential backoff, shared by the reconnect loop and the monitor supervisor,
//! and the `Retry-After` header parser.
//!
//! The jitter matters more than the doubling: after a server restart thousands of guests
//! lose their connection in the same second, and without jitter they would all come back
//! in the same second too, again and again.

use std::time::Duration;

use rand::Rng;

/// Longest `Retry-After` honoured. A larger value (or a bogus one) would park a desktop
/// for longer than any operator expects; an hour is already generous.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Shape of a backoff: the first delay, the cap the doubling stops at, and the jitter
/// as a fraction of the delay (0.5 = ±50 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: f64,
}

impl Default for BackoffPolicy {
    /// 1 s doubling to 60 s, ±50 % jitter (`docs/fleet-protocol.md`).
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.5,
        }
    }
}

/// The retry state: how many failures in a row so far.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff {
            policy,
            failures: 0,
        }
    }

    /// The delay before the next attempt, before jitter: `initial * 2^failures`, capped.
    pub fn base(&self) -> Duration {
        // 2^6 = 64 already passes any sane cap; stop shifting before it overflows.
        let factor = 1u32 << self.failures.min(20);
        self.policy
            .initial
            .saturating_mul(factor)
            .min(self.policy.max)
    }

    /// The jittered delay before the next attempt; counts one more failure.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = jittered(self.base(), self.policy.jitter, rng);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// `base` scaled by a uniform factor in `[1 - jitter, 1 + jitter]`.
pub fn jittered(base: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    if jitter == 0.0 {
        return base;
    }
    let factor = rng.random_range((1.0 - jitter)..=(1.0 + jitter));
    base.mul_f64(factor)
}

/// Reads a `Retry-After` value given in seconds (the form deskfleet's server sends),
/// capped at [`MAX_RETRY_AFTER`]. The HTTP-date form is not understood: `None`, and
/// the caller falls back to its backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let secs: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn base_doubles_from_one_second_and_stops_at_sixty() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let mut bases = Vec::new();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..10 {
            bases.push(backoff.base().as_secs());
            backoff.next_delay(&mut rng);
        }
        assert_eq!(bases, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        backoff.reset();
        assert_eq!(backoff.base(), Duration::from_secs(1));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(BackoffPolicy::default());
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..10_000 {
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= Duration::from_secs(90), "{delay:?}");
        }
        assert_eq!(backoff.base(), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_within_half_either_side_and_spreads() {
        let mut rng = StdRng::seed_from_u64(42);
        let base = Duration::from_secs(10);
        let samples: Vec<Duration> = (0..2000).map(|_| jittered(base, 0.5, &mut rng)).collect();
        let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(*min >= Duration::from_secs(5), "{min:?}");
        assert!(*max <= Duration::from_secs(15), "{max:?}");
        // Uniform over [5 s, 15 s]: 2000 draws reach close to both ends, so two guests
        // that fail together do not come back together.
        assert!(*min < Duration::from_millis(5500), "{min:?}");
        assert!(*max > Duration::from_millis(14500), "{max:?}");
        let below = samples.iter().filter(|d| **d < base).count();
        assert!(
            (800..1200).contains(&below),
            "{below} of 2000 below the base"
        );
    }

    #[test]
    fn zero_jitter_is_exact() {
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(
            jittered(Duration::from_secs(3), 0.0, &mut rng),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_is_seconds_and_capped() {
        assert_eq!(parse_retry_after("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after(""), None);
    }
}
