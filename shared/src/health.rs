//! Health classes for the five signals the operations team watches, with
//! the thresholds of `docs/design.md` (§5, "Health").

use serde::{Deserialize, Serialize};

/// A health level; ordered, so the overall level is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

/// The five signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Percent of lookups answered from a fresh cache entry.
    CacheHitRate,
    /// CRM call latency, milliseconds.
    CrmLatency,
    /// Messages waiting in the main queue.
    QueueDepth,
    /// Messages in the dead-letter queue.
    DlqDepth,
    /// Percent of lookups answered degraded (stale or default).
    DegradedShare,
}

/// Which side of a threshold is bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Values below the threshold are bad (hit rate).
    Below,
    /// Values above the threshold are bad.
    Above,
}

/// Warning and critical thresholds of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub warning: f64,
    pub critical: f64,
    pub direction: Direction,
}

impl Signal {
    pub const ALL: [Signal; 5] =
        [Self::CacheHitRate, Self::CrmLatency, Self::QueueDepth, Self::DlqDepth, Self::DegradedShare];

    /// The dashboard thresholds of `docs/design.md`.
    pub fn thresholds(self) -> Thresholds {
        let (warning, critical, direction) = match self {
            Self::CacheHitRate => (60.0, 30.0, Direction::Below),
            Self::CrmLatency => (500.0, 2000.0, Direction::Above),
            Self::QueueDepth => (100.0, 500.0, Direction::Above),
            Self::DlqDepth => (0.0, 10.0, Direction::Above),
            Self::DegradedShare => (5.0, 20.0, Direction::Above),
        };
        Thresholds { warning, critical, direction }
    }

    /// Classifies a value of this signal.
    pub fn classify(self, value: f64) -> Level {
        self.thresholds().classify(value)
    }
}

impl Thresholds {
    pub fn classify(&self, value: f64) -> Level {
        let beyond = |limit: f64| match self.direction {
            Direction::Below => value < limit,
            Direction::Above => value > limit,
        };
        if beyond(self.critical) {
            Level::Critical
        } else if beyond(self.warning) {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// An edge's write outbox holding a write this long is a warning (SQS out
/// of the edge's reach for a minute), and this long critical: the writes
/// are safe but not moving.
pub const OUTBOX_WARNING_AGE_MS: u64 = 60_000;
pub const OUTBOX_CRITICAL_AGE_MS: u64 = 15 * 60_000;

/// The level of the edges' write outboxes from the age of the oldest write
/// any of them holds (`None`: all empty).
pub fn outbox_level(oldest_age_ms: Option<u64>) -> Level {
    match oldest_age_ms {
        Some(age) if age > OUTBOX_CRITICAL_AGE_MS => Level::Critical,
        Some(age) if age > OUTBOX_WARNING_AGE_MS => Level::Warning,
        _ => Level::Ok,
    }
}

/// The overall level: the worst of the parts (`Ok` for none).
pub fn overall(levels: impl IntoIterator<Item = Level>) -> Level {
    levels.into_iter().max().unwrap_or(Level::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Level::*;

    #[test]
    fn an_outbox_warns_after_a_minute_and_is_critical_after_fifteen() {
        assert_eq!(outbox_level(None), Ok);
        assert_eq!(outbox_level(Some(60_000)), Ok);
        assert_eq!(outbox_level(Some(60_001)), Warning);
        assert_eq!(outbox_level(Some(900_001)), Critical);
    }

    #[test]
    fn guide_thresholds() {
        let cases = [
            (Signal::CacheHitRate, 60.0, Ok),
            (Signal::CacheHitRate, 59.9, Warning),
            (Signal::CacheHitRate, 29.9, Critical),
            (Signal::CrmLatency, 500.0, Ok),
            (Signal::CrmLatency, 501.0, Warning),
            (Signal::CrmLatency, 2001.0, Critical),
            (Signal::QueueDepth, 100.0, Ok),
            (Signal::QueueDepth, 101.0, Warning),
            (Signal::QueueDepth, 501.0, Critical),
            (Signal::DlqDepth, 0.0, Ok),
            (Signal::DlqDepth, 1.0, Warning),
            (Signal::DlqDepth, 11.0, Critical),
            (Signal::DegradedShare, 5.0, Ok),
            (Signal::DegradedShare, 5.1, Warning),
            (Signal::DegradedShare, 20.1, Critical),
        ];
        for (signal, value, want) in cases {
            assert_eq!(signal.classify(value), want, "{signal:?} {value}");
        }
    }

    #[test]
    fn overall_is_the_worst() {
        assert_eq!(overall([Ok, Warning, Ok]), Warning);
        assert_eq!(overall([Critical, Warning]), Critical);
        assert_eq!(overall([]), Ok);
    }
}
