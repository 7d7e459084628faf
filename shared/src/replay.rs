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

/// How far ahead a caller may hold a slot, microseconds. Slots are spaced
/// at the rate of the moment they are handed out: held far ahead at the
/// floor, they kept the pace at the floor after it had grown (32 deliveries
/// waiting at 10/s held 3.2 s of slots, and the 8-minute drill's drain
/// crawled for its first 4 s). Beyond this a caller asks again later.
pub const HORIZON_US: u64 = 100_000;

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
    /// wait for it, in microseconds: `Ok(wait)`. Slots are `1 / rate` apart;
    /// an idle pacer does not save up a burst. A slot more than
    /// [`HORIZON_US`] away is not handed out: `Err(retry_in)` says when to
    /// ask again, by when the rate may have grown and the slots with it.
    pub fn reserve(&mut self, now_us: u64) -> Result<u64, u64> {
        let slot = self.next_slot_us.max(now_us);
        let wait = slot - now_us;
        if wait > HORIZON_US {
            return Err(wait - HORIZON_US);
        }
        // Rounded to the nearest microsecond (`round` is not in `core`).
        let spacing = (1_000_000.0 / self.rate + 0.5) as u64;
        self.next_slot_us = slot.saturating_add(spacing.max(1));
        Ok(wait)
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
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn starts_at_the_ceiling_and_spaces_calls() {
        let mut r = ReplayRate::new(100);
        assert_eq!(r.rate(), 100.0);
        assert_eq!(r.reserve(1_000), Ok(0));
        assert_eq!(r.reserve(1_000), Ok(10_000));
        assert_eq!(r.reserve(1_000), Ok(20_000));
        // Idle time is not saved up as a burst.
        assert_eq!(r.reserve(10_000_000), Ok(0));
        assert_eq!(r.reserve(10_000_000), Ok(10_000));
    }

    #[test]
    fn recovery_restarts_at_the_floor_and_ramps_to_the_ceiling() {
        let mut r = ReplayRate::new(100);
        r.on_recovery(0);
        assert_eq!(r.rate(), 5.0);
        assert_eq!(r.reserve(0), Ok(0));
        assert_eq!(r.reserve(0), Err(100_000), "one call per 200 ms at 5/s; the next slot is past the horizon");
        assert_eq!(r.reserve(100_000), Ok(100_000));
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
            now += match r.reserve(now) {
                Ok(wait) => wait,
                Err(retry) => retry + r.reserve(now + retry).expect("a slot at the horizon"),
            };
            r.on_success();
        }
        assert!(now > 2_000_000 && now < 6_000_000, "100 deliveries took {now} µs");
    }

    /// `callers` deliveries at once, each `took_us` long, after a recovery:
    /// how many are done by `until_us` (a discrete-event run of the worker's
    /// loop: reserve, wait or ask again, deliver, succeed).
    fn deliveries_by(ceiling: u32, callers: usize, took_us: u64, until_us: u64) -> usize {
        let mut r = ReplayRate::new(ceiling);
        r.on_recovery(0);
        // (when the caller acts next, whether it holds a slot then)
        let mut callers: Vec<(u64, bool)> = vec![(0, false); callers];
        let mut done = 0;
        for _ in 0..1_000_000 {
            let (i, &(at, holding)) = callers.iter().enumerate().min_by_key(|(_, c)| c.0).expect("callers");
            if at >= until_us {
                break;
            }
            if holding {
                // Its slot came: deliver, then the next message.
                r.on_success();
                done += 1;
                callers[i] = (at + took_us, false);
            } else {
                callers[i] = match r.reserve(at) {
                    Ok(wait) => (at + wait, true),
                    Err(retry) => (at + retry, false),
                };
            }
        }
        done
    }

    #[test]
    fn a_recovery_ramps_up_however_many_deliveries_wait() {
        // 32 deliveries of 50 ms wait at a 10/s floor (ceiling 200/s). The
        // rate grows e-fold a second: 10·(e²−1) ≈ 64 deliveries in the first
        // 2 s at best, and it reaches the ceiling after 3 s. With slots held
        // however far ahead, the first 32 were spread over 3.2 s at the
        // floor's spacing: 22 in the first 2 s, 53 in 4 s.
        let in_two_seconds = deliveries_by(200, 32, 50_000, 2_000_000);
        assert!(in_two_seconds > 45, "{in_two_seconds} deliveries in the first 2 s");
        let in_four_seconds = deliveries_by(200, 32, 50_000, 4_000_000);
        assert!(in_four_seconds > 300, "{in_four_seconds} deliveries in the first 4 s");
        // …and then the ceiling, never more: about 190 in the ramp's 3 s
        // and 200 a second after it.
        let in_ten_seconds = deliveries_by(200, 32, 50_000, 10_000_000);
        assert!(in_ten_seconds <= 1_650, "{in_ten_seconds} deliveries in 10 s");
        assert!(in_ten_seconds > 1_450, "{in_ten_seconds} deliveries in 10 s");
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
