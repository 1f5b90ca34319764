//! Per-user, per-API request throttling: a token bucket that holds a minute's allowance and
//! refills continuously, so a client that stays under the rate is never refused and one
//! that bursts is told how long to wait (`Retry-After`).
//!
//! The buckets live in this process: with several replicas each enforces the limit on the
//! requests it serves (documented in `docs/operations.md`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

#[derive(Debug, Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<(String, &'static str), Bucket>>,
}

impl Throttle {
    /// Takes one request from the bucket of (`user`, `api`) allowed `per_minute` requests.
    /// `Err(seconds)` says how long until the next request would be allowed.
    pub fn check(
        &self,
        user: &str,
        api: &'static str,
        per_minute: u32,
        now: Instant,
    ) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let per_sec = capacity / 60.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = buckets.entry((user.to_string(), api)).or_insert(Bucket {
            tokens: capacity,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(capacity);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / per_sec).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_a_minute_then_refills() {
        let t = Throttle::default();
        let start = Instant::now();
        for _ in 0..100 {
            assert!(t.check("u", "Install", 100, start).is_ok());
        }
        let wait = t.check("u", "Install", 100, start).unwrap_err();
        assert_eq!(wait, 1);
        // Another user and another API have their own buckets.
        assert!(t.check("v", "Install", 100, start).is_ok());
        assert!(t.check("u", "ShowJob", 100, start).is_ok());
        // 0.6 s later one more request is allowed.
        assert!(
            t.check("u", "Install", 100, start + Duration::from_millis(610))
                .is_ok()
        );
        assert!(
            t.check("u", "Install", 100, start + Duration::from_millis(620))
                .is_err()
        );
    }
}
