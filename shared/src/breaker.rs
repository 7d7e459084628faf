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

/// A change of mode made by [`Breaker::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Mode,
    pub to: Mode,
}

/// What a consumer that pulls work should do next (see [`Breaker::gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed: take work.
    Proceed,
    /// The cool-down is over: send the one probe now.
    Probe,
    /// Open: nothing may go for this long.
    Wait { ms: u64 },
    /// Half-open with the probe still out: ask again shortly (how soon is
    /// the host's choice; the probe's outcome decides what comes next).
    ProbeOutstanding,
}

/// How long an instance trusts its copy of a shared breaker. Bounds both
/// the shared-store reads per call and how late an instance learns of a
/// peer's trip.
pub const SHARED_SYNC_MS: u64 = 1_000;

/// How a host's instances share the breaker through a key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerSharing {
    /// One long-lived process: the breaker lives in memory only.
    Off,
    /// Many long-lived instances (Worker isolates): publish trips and
    /// recoveries, adopt a peer's trip. Rare writes respect a store that
    /// takes one write per key per second.
    Transitions,
    /// A fresh instance per request (Spin): the whole state, window
    /// included, lives in the store and is written after every outcome that
    /// changed it.
    EveryOutcome,
}

impl BreakerSharing {
    /// Whether to re-read the shared copy before asking for a permit, given
    /// when it was last read (`None`: never).
    pub fn should_sync(self, synced_at_ms: Option<u64>, now_ms: u64) -> bool {
        self != Self::Off && synced_at_ms.is_none_or(|at| now_ms.saturating_sub(at) >= SHARED_SYNC_MS)
    }

    /// Whether to publish the state after recording an outcome, given the
    /// transition it made and the failures in the window before and after.
    pub fn should_publish(self, transition: Option<Transition>, failures_before: u32, failures_after: u32) -> bool {
        match self {
            Self::Off => false,
            Self::Transitions => transition.is_some(),
            // A healthy outcome on a clean window changes nothing a peer
            // needs: skipping it keeps the normal case free of writes.
            Self::EveryOutcome => transition.is_some() || failures_before + failures_after > 0,
        }
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

    /// Reports the outcome of a call that was permitted, and returns the
    /// change of mode it made, if any. Outcomes of calls that started before
    /// the breaker opened are ignored while it is open.
    pub fn record(&mut self, success: bool, now_ms: u64, policy: &BreakerPolicy) -> Option<Transition> {
        let from = self.mode;
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
        (from != self.mode).then_some(Transition { from, to: self.mode })
    }

    /// Where a consumer that pulls work (the origin's receive loop) stands:
    /// asks for a permit only once the cool-down is over, so an open
    /// breaker is waited out without spending the probe.
    pub fn gate(&mut self, now_ms: u64, policy: &BreakerPolicy) -> Gate {
        match self.mode {
            Mode::Closed => Gate::Proceed,
            Mode::Open { until_ms } if now_ms < until_ms => Gate::Wait { ms: until_ms - now_ms },
            Mode::Open { .. } | Mode::HalfOpen { .. } => match self.permit(now_ms, policy) {
                Permit::Probe => Gate::Probe,
                Permit::Allowed => Gate::Proceed,
                Permit::Rejected => Gate::ProbeOutstanding,
            },
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
    fn record_reports_each_change_of_mode_once() {
        let mut b = Breaker::default();
        for t in 0..4 {
            assert_eq!(b.record(false, t, &P), None, "failure {t} is below the threshold");
        }
        let opened = Mode::Open { until_ms: 100 + P.cool_down_ms };
        assert_eq!(b.record(false, 100, &P), Some(Transition { from: Mode::Closed, to: opened }));
        assert_eq!(b.record(false, 101, &P), None, "an open breaker ignores late outcomes");

        assert_eq!(b.permit(opened_until(opened), &P), Permit::Probe);
        let probing = b.mode;
        assert_eq!(b.record(true, 5_200, &P), Some(Transition { from: probing, to: Mode::Closed }));
        assert_eq!(b.record(true, 5_300, &P), None);

        let mut failed_probe = Breaker { mode: Mode::HalfOpen { probe_started_ms: 0 }, ..Breaker::default() };
        let to = Mode::Open { until_ms: 10 + P.cool_down_ms };
        assert_eq!(
            failed_probe.record(false, 10, &P),
            Some(Transition { from: Mode::HalfOpen { probe_started_ms: 0 }, to })
        );
    }

    fn opened_until(mode: Mode) -> u64 {
        match mode {
            Mode::Open { until_ms } => until_ms,
            other => panic!("not open: {other:?}"),
        }
    }

    #[test]
    fn the_gate_waits_out_the_cool_down_then_hands_out_one_probe() {
        let mut b = Breaker::default();
        assert_eq!(b.gate(0, &P), Gate::Proceed);
        for _ in 0..P.failure_threshold {
            b.record(false, 1_000, &P);
        }
        assert_eq!(b.gate(1_000, &P), Gate::Wait { ms: P.cool_down_ms });
        assert_eq!(b.gate(5_999, &P), Gate::Wait { ms: 1 });
        assert!(matches!(b.mode, Mode::Open { .. }), "waiting spends no probe");
        assert_eq!(b.gate(6_000, &P), Gate::Probe);
        assert_eq!(b.gate(6_001, &P), Gate::ProbeOutstanding);
        assert_eq!(b.gate(6_000 + P.probe_timeout_ms, &P), Gate::Probe, "a lost probe is replaced");
        b.record(true, 16_100, &P);
        assert_eq!(b.gate(16_100, &P), Gate::Proceed);
    }

    #[test]
    fn sharing_syncs_at_most_once_per_period_and_never_when_off() {
        assert!(!BreakerSharing::Off.should_sync(None, 0));
        for sharing in [BreakerSharing::Transitions, BreakerSharing::EveryOutcome] {
            assert!(sharing.should_sync(None, 0), "{sharing:?}: never read");
            assert!(!sharing.should_sync(Some(5_000), 5_000 + SHARED_SYNC_MS - 1), "{sharing:?}: still trusted");
            assert!(sharing.should_sync(Some(5_000), 5_000 + SHARED_SYNC_MS), "{sharing:?}: expired");
            assert!(!sharing.should_sync(Some(5_000), 4_000), "{sharing:?}: a clock that stepped back trusts its copy");
        }
    }

    #[test]
    fn sharing_publishes_what_peers_need_and_no_more() {
        let trip = Some(Transition { from: Mode::Closed, to: Mode::Open { until_ms: 9 } });
        assert!(!BreakerSharing::Off.should_publish(trip, 4, 0));

        assert!(BreakerSharing::Transitions.should_publish(trip, 4, 0));
        assert!(!BreakerSharing::Transitions.should_publish(None, 1, 2), "a failure below the threshold");

        let every = BreakerSharing::EveryOutcome;
        assert!(every.should_publish(trip, 4, 0));
        assert!(every.should_publish(None, 1, 2), "the window changed");
        assert!(every.should_publish(None, 1, 0), "a success pushed the last failure out");
        assert!(!every.should_publish(None, 0, 0), "a success on a clean window");
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
