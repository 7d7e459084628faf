//! A circuit breaker over the downstream's recent outcomes.
//!
//! While the CRM is failing, every call waits out the deadline (3 s) before
//! falling back. The breaker turns that into an immediate fallback: after
//! `failure_threshold` failures among the last `window` outcomes it opens,
//! rejects calls for `cool_down_ms`, then lets exactly one probe through
//! (half-open). The probe's success closes it; its failure reopens it.
//!
//! The state is a small `Copy` value with serde, so a host may keep it in
//! memory, or share it between isolates through a key-value store.

use serde::{Deserialize, Serialize};

/// The largest window the bitset holds.
pub const MAX_WINDOW: u8 = 64;

/// Breaker parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Outcomes remembered (at most [`MAX_WINDOW`]).
    pub window: u8,
    /// Failures among them that open the breaker.
    pub failure_threshold: u8,
    /// How long an open breaker rejects before letting a probe through.
    pub cool_down_ms: u64,
    /// A probe that reports nothing for this long is presumed lost (its
    /// isolate died), and another probe may go.
    pub probe_timeout_ms: u64,
}

/// The mode of the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum Mode {
    Closed,
    Open { until_ms: u64 },
    HalfOpen { probe_started_ms: u64 },
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

/// Whether a call may go to the downstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: call.
    Allowed,
    /// Half-open: call, as the one probe; report its outcome.
    Probe,
    /// Open: do not call.
    Rejected,
}

impl Permit {
    pub fn may_call(self) -> bool {
        !matches!(self, Self::Rejected)
    }
}

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Breaker {
    pub mode: Mode,
    /// Outcome bits, newest in bit 0; 1 is a failure.
    window_bits: u64,
    /// How many outcomes the bits hold (≤ the policy's window).
    window_len: u8,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { mode: Mode::Closed, window_bits: 0, window_len: 0 }
    }
}

impl Breaker {
    /// Failures among the remembered outcomes.
    pub fn failures(&self) -> u32 {
        self.window_bits.count_ones()
    }

    /// Asks whether a call may go now. Moves open → half-open once the
    /// cool-down has passed, handing out a single probe.
    pub fn permit(&mut self, now_ms: u64, policy: &BreakerPolicy) -> Permit {
        match self.mode {
            Mode::Closed => Permit::Allowed,
            Mode::Open { until_ms } if now_ms < until_ms => Permit::Rejected,
            Mode::HalfOpen { probe_started_ms }
                if now_ms.saturating_sub(probe_started_ms) < policy.probe_timeout_ms =>
            {
                Permit::Rejected
            }
            Mode::Open { .. } | Mode::HalfOpen { .. } => {
                self.mode = Mode::HalfOpen { probe_started_ms: now_ms };
                Permit::Probe
            }
        }
    }

    /// Reports the outcome of a call that was permitted. Outcomes of calls
    /// that started before the breaker opened are ignored while it is open.
    pub fn record(&mut self, success: bool, now_ms: u64, policy: &BreakerPolicy) {
        match self.mode {
            Mode::Open { .. } => {}
            Mode::HalfOpen { .. } if success => *self = Self::default(),
            Mode::HalfOpen { .. } => self.open(now_ms, policy),
            Mode::Closed => {
                let window = policy.window.clamp(1, MAX_WINDOW);
                let mask = if window == 64 { u64::MAX } else { (1u64 << window) - 1 };
                self.window_bits = ((self.window_bits << 1) | u64::from(!success)) & mask;
                self.window_len = (self.window_len + 1).min(window);
                if self.failures() >= u32::from(policy.failure_threshold.max(1)) {
                    self.open(now_ms, policy);
                }
            }
        }
    }

    /// Whether nothing has been recorded since the breaker was (re)built:
    /// a fresh isolate or a per-request instance.
    pub fn is_pristine(&self) -> bool {
        self.mode == Mode::Closed && self.window_len == 0
    }

    /// Merges the state another instance published (through a shared
    /// store). A pristine breaker takes it whole, so per-request instances
    /// keep one window between them; a closed breaker adopts an open one that
    /// has not expired, so one trip stops every instance waiting out the
    /// deadline. An open breaker is never closed by a peer: it probes itself.
    pub fn adopt(&mut self, shared: &Breaker, now_ms: u64) {
        if self.is_pristine() {
            *self = *shared;
            return;
        }
        if let (Mode::Closed, Mode::Open { until_ms }) = (self.mode, shared.mode)
            && until_ms > now_ms
        {
            *self = Breaker { mode: shared.mode, ..Breaker::default() };
        }
    }

    fn open(&mut self, now_ms: u64, policy: &BreakerPolicy) {
        self.mode = Mode::Open { until_ms: now_ms.saturating_add(policy.cool_down_ms) };
        self.window_bits = 0;
        self.window_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: BreakerPolicy =
        BreakerPolicy { window: 20, failure_threshold: 5, cool_down_ms: 5_000, probe_timeout_ms: 10_000 };

    #[test]
    fn opens_at_the_threshold_and_probes_after_the_cool_down() {
        let mut b = Breaker::default();
        for i in 0..4 {
            assert_eq!(b.permit(i, &P), Permit::Allowed);
            b.record(false, i, &P);
        }
        assert_eq!(b.mode, Mode::Closed);
        b.record(false, 100, &P);
        assert_eq!(b.mode, Mode::Open { until_ms: 5_100 });
        assert_eq!(b.permit(5_099, &P), Permit::Rejected);
        assert_eq!(b.permit(5_100, &P), Permit::Probe);
        // Only one probe at a time.
        assert_eq!(b.permit(5_101, &P), Permit::Rejected);
        b.record(true, 5_200, &P);
        assert_eq!(b, Breaker::default());
    }

    #[test]
    fn a_failed_probe_reopens_and_a_lost_probe_is_replaced() {
        let mut b = Breaker { mode: Mode::Open { until_ms: 0 }, ..Breaker::default() };
        assert_eq!(b.permit(10, &P), Permit::Probe);
        b.record(false, 20, &P);
        assert_eq!(b.mode, Mode::Open { until_ms: 5_020 });
        assert_eq!(b.permit(5_020, &P), Permit::Probe);
        assert_eq!(b.permit(5_020 + P.probe_timeout_ms, &P), Permit::Probe);
    }

    #[test]
    fn successes_push_old_failures_out_of_the_window() {
        let mut b = Breaker::default();
        for round in 0..10 {
            for _ in 0..4 {
                b.record(false, round, &P);
            }
            for _ in 0..20 {
                b.record(true, round, &P);
            }
        }
        assert_eq!(b.mode, Mode::Closed);
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn adopts_a_peers_trip_but_never_a_peers_recovery() {
        let open = Breaker { mode: Mode::Open { until_ms: 9_000 }, ..Breaker::default() };
        let mut pristine = Breaker::default();
        pristine.adopt(&open, 1_000);
        assert_eq!(pristine.mode, Mode::Open { until_ms: 9_000 });

        let mut busy = Breaker::default();
        busy.record(true, 0, &P);
        busy.adopt(&open, 1_000);
        assert_eq!(busy.mode, Mode::Open { until_ms: 9_000 });

        let mut expired = Breaker::default();
        expired.record(true, 0, &P);
        expired.adopt(&open, 9_000);
        assert_eq!(expired.mode, Mode::Closed);

        let mut tripped = Breaker::default();
        for _ in 0..P.failure_threshold {
            tripped.record(false, 100, &P);
        }
        tripped.adopt(&Breaker::default(), 200);
        assert!(matches!(tripped.mode, Mode::Open { .. }));
    }

    #[test]
    fn state_round_trips_through_json() {
        let b = Breaker { mode: Mode::Open { until_ms: 42 }, window_bits: 0, window_len: 0 };
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"mode":{"mode":"open","untilMs":42},"windowBits":0,"windowLen":0}"#);
        assert_eq!(serde_json::from_str::<Breaker>(&json).unwrap(), b);
    }

    proptest! {
        #[test]
        fn opens_exactly_when_failures_reach_the_threshold(outcomes in proptest::collection::vec(any::<bool>(), 0..200)) {
            let mut b = Breaker::default();
            let mut recent: std::vec::Vec<bool> = std::vec::Vec::new();
            for (t, ok) in outcomes.into_iter().enumerate() {
                b.record(ok, t as u64, &P);
                recent.push(ok);
                if recent.len() > usize::from(P.window) { recent.remove(0); }
                let failures = recent.iter().filter(|ok| !**ok).count();
                if failures >= usize::from(P.failure_threshold) {
                    prop_assert_eq!(b.mode, Mode::Open { until_ms: t as u64 + P.cool_down_ms });
                    break;
                }
                prop_assert_eq!(b.mode, Mode::Closed);
            }
        }

        #[test]
        fn half_opens_only_after_the_cool_down(opened_at in 0u64..1_000_000, wait in 0u64..20_000) {
            let mut b = Breaker::default();
            for _ in 0..P.failure_threshold { b.record(false, opened_at, &P); }
            let permit = b.permit(opened_at + wait, &P);
            if wait < P.cool_down_ms {
                prop_assert_eq!(permit, Permit::Rejected);
                prop_assert!(matches!(b.mode, Mode::Open { .. }), "open");
            } else {
                prop_assert_eq!(permit, Permit::Probe);
                prop_assert!(matches!(b.mode, Mode::HalfOpen { .. }), "half-open");
            }
        }
    }
}
