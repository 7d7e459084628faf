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
//!
//! A CRM that states its limit (configured, or in its answers' rate-limit
//! headers: [`crate::rate_limit`]) lowers the ceiling to just under it, and
//! its `Retry-After` or an exhausted window holds every call, not only the
//! throttled one: the drain then runs at the CRM's capacity without
//! learning it from 429s.

use crate::rate_limit::Quota;

/// The lowest rate as a fraction of the ceiling: a recovered CRM first sees
/// one twentieth of the traffic it will get once it keeps up.
const FLOOR_FRACTION: f64 = 0.05;
/// Every success adds this many deliveries per second. At rate `r` there are
/// `r` successes a second, so the rate grows by a factor of e a second:
/// from the floor to the ceiling in about three seconds when all goes well.
const INCREASE_PER_SUCCESS: f64 = 1.0;
/// After an outage, a CRM whose limit is known (stated or configured) is
/// replayed to from this share of it, not from the floor: it has said what
/// it can take, and the ramp from here still takes a second and a half.
const RECOVERY_SHARE_OF_KNOWN_LIMIT: f64 = 0.25;
/// A failure that says the downstream is struggling halves the rate.
const DECREASE_FACTOR: f64 = 0.5;

/// How far ahead a caller may hold a slot, microseconds. Slots are spaced
/// at the rate of the moment they are handed out: held far ahead at the
/// floor, they kept the pace at the floor after it had grown (32 deliveries
/// waiting at 10/s held 3.2 s of slots, and the 8-minute drill's drain
/// crawled for its first 4 s). Beyond this a caller asks again later.
pub const HORIZON_US: u64 = 100_000;

/// The share of a downstream's stated limit the replay uses: calls spaced
/// at exactly the limit, with the CRM's window boundaries wherever they
/// fall, would now and then put one call too many in a window.
pub const HEADROOM: f64 = 0.95;

/// The pacing state.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRate {
    /// `FAILSOFT_REPLAY_RATE_MAX`: never more, whatever the CRM allows.
    max: f64,
    /// The rate the pacer ramps to: `max`, or less when the CRM's limit is
    /// known (configured or stated in its answers), less [`HEADROOM`].
    ceiling: f64,
    floor: f64,
    rate: f64,
    /// The earliest start of the next call, in the caller's microseconds.
    next_slot_us: u64,
    /// No call before this (the CRM said wait: `Retry-After`, or no calls
    /// left in its window).
    hold_until_us: u64,
    /// The longest reset a CRM stated without its window, ms: the window's
    /// length as far as the answers tell.
    window_guess_ms: u64,
    /// Whether the ceiling is the CRM's own limit, not only ours.
    limit_known: bool,
}

impl ReplayRate {
    /// A pacer at its ceiling (`ceiling_per_sec` ≥ 1): a worker that starts
    /// against a healthy CRM goes at full speed, and slows only on failure.
    pub fn new(ceiling_per_sec: u32) -> Self {
        let max = f64::from(ceiling_per_sec.max(1));
        let floor = (max * FLOOR_FRACTION).max(1.0);
        Self {
            max,
            ceiling: max,
            floor,
            rate: max,
            next_slot_us: 0,
            hold_until_us: 0,
            window_guess_ms: 0,
            limit_known: false,
        }
    }

    /// The CRM's limit as configured (`FAILSOFT_CRM_RATE_LIMIT`, calls per
    /// second): the pacer starts below it instead of learning it from a 429.
    pub fn with_known_limit(mut self, calls_per_sec: Option<f64>) -> Self {
        if let Some(limit) = calls_per_sec {
            self.set_capacity(limit);
            self.rate = self.ceiling;
        }
        self
    }

    /// Deliveries per second allowed now.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The rate the pacer ramps to.
    pub fn ceiling(&self) -> f64 {
        self.ceiling
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
        self.reserve_calls(now_us, 1)
    }

    /// [`ReplayRate::reserve`] for a delivery that makes `calls` CRM calls
    /// back to back (a write that looks before it creates): it waits for
    /// one slot and the next caller for all of them, so the CRM's limit
    /// counts every call while the delivery's own calls stay together (a
    /// look and a create a whole slot apart at the floor could straddle
    /// the CRM's next failure).
    pub fn reserve_calls(&mut self, now_us: u64, calls: u32) -> Result<u64, u64> {
        let slot = self.next_slot_us.max(now_us).max(self.hold_until_us);
        let wait = slot - now_us;
        if wait > HORIZON_US {
            return Err(wait - HORIZON_US);
        }
        // Rounded to the nearest microsecond (`round` is not in `core`).
        let spacing = (1_000_000.0 / self.rate + 0.5) as u64;
        self.next_slot_us = slot.saturating_add(spacing.max(1).saturating_mul(u64::from(calls.max(1))));
        Ok(wait)
    }

    /// A delivery succeeded: additive increase.
    pub fn on_success(&mut self) {
        self.rate = (self.rate + INCREASE_PER_SUCCESS).min(self.ceiling);
    }

    /// A delivery failed in a way that says the downstream is struggling
    /// (5xx, timeout): multiplicative decrease.
    pub fn on_overload(&mut self) {
        self.rate = (self.rate * DECREASE_FACTOR).max(self.floor);
    }

    /// A 429: multiplicative decrease, and no call at all before its
    /// `Retry-After` (ms) has passed.
    pub fn on_throttled(&mut self, retry_after_ms: Option<u64>, now_us: u64) {
        self.on_overload();
        if let Some(ms) = retry_after_ms {
            self.hold(now_us, ms);
        }
    }

    /// What an answer said of the CRM's limit: its sustained rate becomes
    /// the ceiling (less [`HEADROOM`]), and a window with no calls left
    /// holds every call until it resets.
    pub fn on_quota(&mut self, quota: &Quota, now_us: u64) {
        let stated = quota.calls_per_sec().or_else(|| {
            // No window stated: the longest reset seen is the best guess
            // of it (too short at first, so too fast: a 429 corrects it).
            let reset = quota.reset_ms.filter(|&ms| ms > 0)?;
            self.window_guess_ms = self.window_guess_ms.max(reset).max(1_000);
            Quota { window_ms: Some(self.window_guess_ms), ..*quota }.calls_per_sec()
        });
        if let Some(limit) = stated {
            self.set_capacity(limit);
        }
        if let (Some(0), Some(reset_ms)) = (quota.remaining, quota.reset_ms) {
            self.hold(now_us, reset_ms);
        }
    }

    /// The breaker closed after an outage: start again from the floor, or
    /// from a quarter of a known limit.
    pub fn on_recovery(&mut self, now_us: u64) {
        self.rate =
            if self.limit_known { (self.ceiling * RECOVERY_SHARE_OF_KNOWN_LIMIT).max(self.floor) } else { self.floor };
        self.next_slot_us = now_us;
    }

    fn set_capacity(&mut self, calls_per_sec: f64) {
        if !(calls_per_sec.is_finite() && calls_per_sec > 0.0) {
            return;
        }
        self.ceiling = (calls_per_sec * HEADROOM).clamp(1.0, self.max);
        self.limit_known = true;
        self.floor = (self.ceiling * FLOOR_FRACTION).max(1.0);
        self.rate = self.rate.clamp(self.floor, self.ceiling);
    }

    fn hold(&mut self, now_us: u64, ms: u64) {
        // A day at most: a hostile `Retry-After` must not park the replay.
        let until = now_us.saturating_add(ms.min(86_400_000).saturating_mul(1_000));
        self.hold_until_us = self.hold_until_us.max(until);
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
    fn a_delivery_of_two_calls_takes_two_slots_at_once() {
        let mut r = ReplayRate::new(100);
        assert_eq!(r.reserve_calls(0, 2), Ok(0), "both calls may go now");
        assert_eq!(r.reserve(0), Ok(20_000), "the next caller waits for both");
        assert_eq!(r.reserve_calls(0, 0), Ok(30_000), "a delivery takes at least one slot");
        assert_eq!(r.reserve(0), Ok(40_000));
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

    /// A drain of `messages` by `callers` deliveries at once, each call
    /// `took_us` long, against a CRM that allows `limit` calls in each
    /// fixed one-second window and says so on every answer as crm-sim does
    /// (`RateLimit-Limit`, `-Remaining`, `-Reset`, `-Policy: limit;w=1`;
    /// 429 with `Retry-After: 1` over it). `headers`: whether it states the
    /// quota at all. Returns (seconds to drain, calls throttled).
    fn drain(
        pacer: &mut ReplayRate,
        limit: u64,
        messages: usize,
        callers: usize,
        took_us: u64,
        headers: bool,
    ) -> (f64, usize) {
        let (mut window, mut used, mut done, mut throttled) = (0, 0, 0, 0);
        let mut callers: Vec<(u64, bool)> = vec![(0, false); callers];
        let mut last = 0;
        for _ in 0..10_000_000 {
            if done == messages {
                break;
            }
            let (i, &(at, holding)) = callers.iter().enumerate().min_by_key(|(_, c)| c.0).expect("callers");
            if !holding {
                callers[i] = match pacer.reserve(at) {
                    Ok(wait) => (at + wait, true),
                    Err(retry) => (at + retry, false),
                };
                continue;
            }
            // The call reaches the CRM at `at`; its answer comes `took_us` later.
            if at / 1_000_000 != window {
                (window, used) = (at / 1_000_000, 0);
            }
            let answered = at + took_us;
            if used < limit {
                used += 1;
                done += 1;
                last = answered;
                pacer.on_success();
                if headers {
                    let quota = Quota {
                        limit: Some(limit),
                        remaining: Some(limit - used),
                        reset_ms: Some(1_000),
                        window_ms: Some(1_000),
                    };
                    pacer.on_quota(&quota, answered);
                }
            } else {
                throttled += 1;
                pacer.on_throttled(Some(1_000), answered);
            }
            callers[i] = (answered, false);
        }
        (last as f64 / 1e6, throttled)
    }

    #[test]
    fn a_drain_runs_at_the_limit_the_crm_states_with_few_throttled() {
        // 2,500 messages, 32 at once, 20 ms a call, the CRM at 50 calls/s;
        // the pacer starts at its 200/s ceiling, knowing nothing.
        let mut r = ReplayRate::new(200);
        let (secs, throttled) = drain(&mut r, 50, 2_500, 32, 20_000, true);
        let share_of_limit = 2_500.0 / secs / 50.0;
        assert!(share_of_limit >= 0.9, "{share_of_limit:.3} of the limit ({secs:.1} s)");
        assert!(throttled <= 25, "{throttled} throttled");
        assert!(r.ceiling() <= 50.0 * HEADROOM, "ceiling {}", r.ceiling());
        // After an outage: from the floor, ramping to the known limit.
        let mut r = ReplayRate::new(200).with_known_limit(Some(50.0));
        r.on_recovery(0);
        assert_eq!(r.rate(), 50.0 * HEADROOM * RECOVERY_SHARE_OF_KNOWN_LIMIT, "a known limit: from a quarter of it");
        let (secs, throttled) = drain(&mut r, 50, 2_500, 32, 20_000, true);
        assert!(2_500.0 / secs / 50.0 >= 0.9, "after recovery: {secs:.1} s");
        assert_eq!(throttled, 0, "a configured limit is never overrun");
    }

    #[test]
    fn without_quota_headers_429s_are_what_slows_the_drain() {
        // The same CRM stating nothing: the pacer learns only from 429s,
        // and each one holds every call for its Retry-After.
        let mut r = ReplayRate::new(200);
        let (secs, throttled) = drain(&mut r, 50, 500, 32, 20_000, false);
        assert!(throttled > 5, "{throttled} throttled: nothing told the pacer the limit");
        assert!(secs >= 10.0 - 0.1, "never faster than the limit: {secs:.1} s for 500");
    }

    #[test]
    fn a_stated_window_with_no_calls_left_holds_every_call() {
        let mut r = ReplayRate::new(100);
        let empty = Quota { limit: Some(10), remaining: Some(0), reset_ms: Some(2_000), window_ms: None };
        r.on_quota(&empty, 0);
        assert_eq!(r.ceiling(), 10.0 * 1_000.0 / 2_000.0 * HEADROOM, "window guessed from the reset");
        assert_eq!(r.reserve(0), Err(2_000_000 - HORIZON_US));
        assert_eq!(r.reserve(2_000_000), Ok(0));
        // A longer reset later is a better guess of the window.
        r.on_quota(&Quota { reset_ms: Some(10_000), remaining: Some(5), ..empty }, 2_000_000);
        assert_eq!(r.ceiling(), 1.0, "10 per 10 s, less the headroom, floored at 1/s");
        // A Retry-After past a day is held a day, not forever.
        r.on_throttled(Some(u64::MAX), 0);
        assert_eq!(r.reserve(0), Err(86_400_000_000 - HORIZON_US));
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
