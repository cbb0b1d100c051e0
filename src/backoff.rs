//! The one backoff curve: a wait that doubles from a first value up to a ceiling, used
//! by the outbox between delivery attempts, by the broker connection between
//! reconnects, and by catch-up between failed sweeps. Each names its own [`Curve`]
//! here, so the numbers SPEC and the README quote sit side by side.

use std::time::Duration;

/// A doubling wait: `first`, `2 × first`, ... at most `max` (whole seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Curve {
    first: u64,
    max: u64,
}

/// Between delivery attempts of an output job: 1 s doubling to 60 s (`--output-attempts`).
/// The broker connection reconnects on the same curve.
pub const OUTBOX: Curve = Curve::secs(1, 60);
/// Between failed catch-up sweeps: 5 s doubling to 10 minutes (SPEC §11).
pub const CATCHUP: Curve = Curve::secs(5, 600);
/// Between failed queries of one details lookup: 1 s doubling to 30 s (SPEC §13: at
/// most 30 s apart).
pub const DETAILS: Curve = Curve::secs(1, 30);

impl Curve {
    pub const fn secs(first: u64, max: u64) -> Curve {
        Curve { first, max }
    }

    /// The wait before try number `n` (1-based; 0 counts as 1).
    pub fn wait(self, n: i64) -> Duration {
        let exp = (n.max(1) - 1).min(32) as u32;
        Duration::from_secs(self.first.saturating_mul(1u64 << exp).min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbox_waits_one_second_doubling_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|a| OUTBOX.wait(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(OUTBOX.wait(0).as_secs(), 1);
    }

    #[test]
    fn catch_up_waits_five_seconds_doubling_to_ten_minutes() {
        let secs: Vec<u64> = (1..=10).map(|f| CATCHUP.wait(f).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[test]
    fn a_details_lookup_is_asked_again_at_most_thirty_seconds_later() {
        let secs: Vec<u64> = (0..=8).map(|a| DETAILS.wait(a).as_secs()).collect();
        assert_eq!(secs, [1, 1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn a_huge_count_stays_at_the_ceiling() {
        assert_eq!(OUTBOX.wait(i64::MAX).as_secs(), 60);
        assert_eq!(CATCHUP.wait(1_000).as_secs(), 600);
    }
}
