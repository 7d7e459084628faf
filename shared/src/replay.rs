//! Pacing of downstream deliveries: additive increase, multiplicative
//! decrease (AIMD) on a rate, with the calls spaced evenly.
//!
//! A CRM that has just come back after an outage faces the whole backlog at
//! once. The breaker decides *whether* to call; this decides *how fast*: after
//! a recovery the rate restarts at its floor and grows with every success, a
//! transient or throttled failure halves it, and it never exceeds the
//! configured ceiling. Sans-IO: callers pass the time in and sleep for the
//! wait this returns (after Vector's adaptive request concurrency, applied to
//! a rate because SQS hands us work in batches, not a request stream).

/// The lowest rate as a fraction of the ceiling: a recovered CRM first sees
/// one twentieth of the traffic it will get once it keeps up.
const FLOOR_FRACTION: f64 = 0.05;
/// Every success adds this many deliveries per second. At rate `r` there are
/// `r` successes a second, so the rate grows by a factor of e a second:
/// from the floor to the ceiling in about three seconds when all goes well.
const INCREASE_PER_SUCCESS: f64 = 1.0;
/// A failure that says the downstream is struggling halves the rate.
const DECREASE_FACTOR: f64 = 0.5;

/// The pacing state.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRate {
    ceiling: f64,
    floor: f64,
    rate: f64,
    /// The earliest start of the next call, in the caller's microseconds.
    next_slot_us: u64,
}

impl ReplayRate {
    /// A pacer at its ceiling (`ceiling_per_sec` ≥ 1): a worker that starts
    /// against a healthy CRM goes at full speed, and slows only on failure.
    pub fn new(ceiling_per_sec: u32) -> Self {
        let ceiling = f64::from(ceiling_per_sec.max(1));
        let floor = (ceiling * FLOOR_FRACTION).max(1.0);
        Self { ceiling, floor, rate: ceiling, next_slot_us: 0 }
    }

    /// Deliveries per second allowed now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// Reserves the next slot at or after `now_us` and returns how long to
    /// wait for it, in microseconds. Slots are `1 / rate` apart; an idle
    /// pacer does not save up a burst.
    pub fn reserve(&mut self, now_us: u64) -> u64 {
        let slot = self.next_slot_us.max(now_us);
        // Rounded to the nearest microsecond (`round` is not in `core`).
        let spacing = (1_000_000.0 / self.rate + 0.5) as u64;
        self.next_slot_us = slot.saturating_add(spacing.max(1));
        slot - now_us
    }

    /// A delivery succeeded: additive increase.
    pub fn on_success(&mut self) {
        self.rate = (self.rate + INCREASE_PER_SUCCESS).min(self.ceiling);
    }

    /// A delivery failed in a way that says the downstream is struggling
    /// (5xx, timeout, 429): multiplicative decrease.
    pub fn on_overload(&mut self) {
        self.rate = (self.rate * DECREASE_FACTOR).max(self.floor);
    }

    /// The breaker closed after an outage: start again from the floor.
    pub fn on_recovery(&mut self, now_us: u64) {
        self.rate = self.floor;
        self.next_slot_us = now_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_ceiling_and_spaces_calls() {
        let mut r = ReplayRate::new(100);
        assert_eq!(r.rate(), 100.0);
        assert_eq!(r.reserve(1_000), 0);
        assert_eq!(r.reserve(1_000), 10_000);
        assert_eq!(r.reserve(1_000), 20_000);
        // Idle time is not saved up as a burst.
        assert_eq!(r.reserve(10_000_000), 0);
        assert_eq!(r.reserve(10_000_000), 10_000);
    }

    #[test]
    fn recovery_restarts_at_the_floor_and_ramps_to_the_ceiling() {
        let mut r = ReplayRate::new(100);
        r.on_recovery(0);
        assert_eq!(r.rate(), 5.0);
        assert_eq!(r.reserve(0), 0);
        assert_eq!(r.reserve(0), 200_000, "one call per 200 ms at 5/s");
        let mut successes = 0;
        while r.rate() < 100.0 {
            r.on_success();
            successes += 1;
        }
        assert_eq!(successes, 95);
        r.on_success();
        assert_eq!(r.rate(), 100.0, "never above the ceiling");
    }

    #[test]
    fn the_ramp_takes_seconds_not_a_burst() {
        // Simulate deliveries taking no time: each reserves a slot, waits for
        // it and succeeds. Count how long the first 100 take after recovery.
        let mut r = ReplayRate::new(100);
        r.on_recovery(0);
        let mut now = 0;
        for _ in 0..100 {
            now += r.reserve(now);
            r.on_success();
        }
        assert!(now > 2_000_000 && now < 6_000_000, "100 deliveries took {now} µs");
    }

    #[test]
    fn overload_halves_down_to_the_floor() {
        let mut r = ReplayRate::new(40);
        r.on_overload();
        assert_eq!(r.rate(), 20.0);
        for _ in 0..10 {
            r.on_overload();
        }
        assert_eq!(r.rate(), r.floor());
        assert_eq!(r.floor(), 2.0);
        assert_eq!(ReplayRate::new(1).floor(), 1.0, "the floor is at least one a second");
    }
}
