//! The retry policy of a workflow or node, and the schedule it implies.
//!
//! The policy is read from `settings.retry_policy` (and may be overridden per node). The
//! schedule is a pure function of the policy, the number of the attempt that just failed and a
//! random number supplied by the caller, so it can be tested without clocks or randomness.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest any single retry delay may be, whatever the policy says; it keeps exponential
/// growth from overflowing and a typo in `max_delay` from parking a node for years.
pub const DELAY_CEILING: Duration = Duration::from_secs(24 * 60 * 60);

/// How the delay grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Every retry waits `retry_delay`.
    #[default]
    Fixed,
    /// Retry `n` (from 1) waits `retry_delay × 2^(n-1)`.
    Exponential,
}

/// `settings.retry_policy`, with the seed's field names.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt: `3` allows four attempts in all.
    pub max_retries: u32,
    /// Base delay before a retry, in seconds.
    pub retry_delay: f64,
    /// How the delay grows.
    pub backoff: Backoff,
    /// Upper bound on one delay, in seconds.
    pub max_delay: Option<f64>,
    /// Spread applied to each delay, as a fraction: `0.2` draws from ±20 % of it.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Three retries a minute apart, as the seed's `node_runs.max_retries` and example settings.
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay: 60.0,
            backoff: Backoff::Fixed,
            max_delay: None,
            jitter: 0.0,
        }
    }
}

impl RetryPolicy {
    /// Every attempt the policy allows, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    /// Whether another attempt may follow attempt number `failed_attempt` (counted from 1).
    pub fn allows_retry_after(&self, failed_attempt: u32) -> bool {
        failed_attempt < self.max_attempts()
    }

    /// How long to wait after attempt `failed_attempt` (from 1) failed.
    ///
    /// `unit_random` is a number in `[0, 1)` used for jitter; pass `0.5` for the centre.
    pub fn delay_after(&self, failed_attempt: u32, unit_random: f64) -> Duration {
        let base = non_negative(self.retry_delay);
        let grown = match self.backoff {
            Backoff::Fixed => base,
            // Past 2^63 the product is already far beyond the ceiling; capping the exponent
            // keeps `powi` finite.
            Backoff::Exponential => {
                base * 2f64.powi(failed_attempt.saturating_sub(1).min(63) as i32)
            }
        };
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = 1.0 + jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        let ceiling = self
            .max_delay
            .map_or(DELAY_CEILING.as_secs_f64(), non_negative);
        let seconds = (grown * spread)
            .min(ceiling)
            .min(DELAY_CEILING.as_secs_f64());
        Duration::from_secs_f64(seconds)
    }
}

fn non_negative(seconds: f64) -> f64 {
    if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> RetryPolicy {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn max_retries_three_means_four_attempts() {
        let p = policy(r#"{"max_retries": 3, "retry_delay": 10}"#);

        assert_eq!(p.max_attempts(), 4);
        assert!(p.allows_retry_after(3));
        assert!(!p.allows_retry_after(4));
    }

    #[test]
    fn fixed_backoff_waits_the_same_each_time() {
        let p = policy(r#"{"retry_delay": 10}"#);

        for attempt in 1..=5 {
            assert_eq!(p.delay_after(attempt, 0.5), Duration::from_secs(10));
        }
    }

    #[test]
    fn exponential_backoff_doubles_up_to_max_delay() {
        let p = policy(r#"{"retry_delay": 2, "backoff": "exponential", "max_delay": 10}"#);

        let delays: Vec<u64> = (1..=5).map(|a| p.delay_after(a, 0.5).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 10, 10]);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let p = policy(r#"{"retry_delay": 10, "jitter": 0.2}"#);

        assert_eq!(p.delay_after(1, 0.0), Duration::from_secs(8));
        assert_eq!(p.delay_after(1, 1.0), Duration::from_secs(12));
    }

    #[test]
    fn huge_attempt_numbers_stay_under_the_ceiling() {
        let p = policy(r#"{"retry_delay": 1, "backoff": "exponential"}"#);

        assert_eq!(p.delay_after(u32::MAX, 0.5), DELAY_CEILING);
    }

    #[test]
    fn nonsense_delays_become_zero_instead_of_panicking() {
        let p = RetryPolicy {
            retry_delay: f64::NAN,
            ..RetryPolicy::default()
        };

        assert_eq!(p.delay_after(1, 0.5), Duration::ZERO);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<RetryPolicy>(r#"{"max_retry": 3}"#).unwrap_err();

        assert!(
            err.to_string().contains("unknown field `max_retry`"),
            "{err}"
        );
    }
}
