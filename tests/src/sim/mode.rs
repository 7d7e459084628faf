//! Failure modes and what each one does to a request.
//!
//! The mode is global and applies to every API request. Turning an admin
//! request into a [`FailureMode`] validates it once; [`ModeState::verdict`]
//! then decides per request, as a plain function of the route and the time,
//! so the decisions are tested here without sockets or sleeps.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::route::Route;

/// Longest `latencyMs` accepted for `slow`: slower than any client deadline
/// worth testing, short enough that a typo cannot park a test run for hours.
pub const MAX_LATENCY_MS: u64 = 600_000;
/// Longest `Retry-After` accepted for `throttle` (one day).
pub const MAX_RETRY_AFTER_SECS: u64 = 86_400;
/// Longest half-period accepted for `flap` (one hour).
pub const MAX_PERIOD_MS: u64 = 3_600_000;

const DEFAULT_ERROR_STATUS: u16 = 500;
const DEFAULT_REJECT_STATUS: u16 = 422;
const DEFAULT_LATENCY_MS: u64 = 1_000;
/// `late`'s default hold: longer than any client deadline failsoft uses,
/// so every caller gives up before the answer comes.
const DEFAULT_LATE_MS: u64 = 15_000;
const DEFAULT_RETRY_AFTER_SECS: u64 = 1;
const DEFAULT_PERIOD_MS: u64 = 1_000;

/// How the simulated CRM misbehaves. Serialises as the admin API shows it,
/// e.g. `{"mode":"throttle","retryAfterSecs":5}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase", rename_all_fields = "camelCase")]
pub enum FailureMode {
    /// Normal service.
    Up,
    /// The API port is closed: connections are refused.
    Down,
    /// Requests are read and never answered while the mode lasts.
    Hang,
    /// Every request fails with `status` (a transient 5xx by default).
    Error { status: u16 },
    /// Every request is answered normally after `latency_ms`.
    Slow { latency_ms: u64 },
    /// Every request is carried out at once (a case is created) and its
    /// answer held for `latency_ms`: a CRM that acts and then answers too
    /// late, so a caller that gave up cannot know the create happened.
    Late { latency_ms: u64 },
    /// Every request gets 429 with `Retry-After: retry_after_secs`.
    Throttle { retry_after_secs: u64 },
    /// Alternates normal service and 500 every `period_ms`, starting with
    /// service, counted from when the mode was set.
    Flap { period_ms: u64 },
    /// Case creations and event deliveries fail with the permanent
    /// `status`; lookups work.
    Reject { status: u16 },
}

impl FailureMode {
    /// Whether this mode closes the API listener.
    pub fn is_down(self) -> bool {
        self == Self::Down
    }
}

/// The body of `POST /admin/mode`; parameters that do not apply to the
/// chosen mode are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeRequest {
    pub mode: String,
    pub latency_ms: Option<u64>,
    pub retry_after_secs: Option<u64>,
    pub period_ms: Option<u64>,
    pub status: Option<u16>,
}

/// Why a [`ModeRequest`] was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeError {
    /// Not one of the mode names.
    Unknown(String),
    /// A parameter outside its bounds.
    OutOfRange { field: &'static str, value: u64, min: u64, max: u64 },
}

impl ModeError {
    /// Stable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "unknown_mode",
            Self::OutOfRange { .. } => "invalid_parameter",
        }
    }
}

impl fmt::Display for ModeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(name) => {
                write!(f, "unknown mode {name:?}; expected up, down, hang, error, slow, late, throttle, flap or reject")
            }
            Self::OutOfRange { field, value, min, max } => write!(f, "{field} is {value}, expected {min}..={max}"),
        }
    }
}

fn bounded(field: &'static str, value: Option<u64>, default: u64, min: u64, max: u64) -> Result<u64, ModeError> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) { Ok(value) } else { Err(ModeError::OutOfRange { field, value, min, max }) }
}

/// Error statuses must be client or server errors: anything else would not
/// be a failure for the caller to handle.
fn error_status(value: Option<u16>, default: u16) -> Result<u16, ModeError> {
    let status = bounded("status", value.map(u64::from), u64::from(default), 400, 599)?;
    Ok(u16::try_from(status).unwrap_or(default))
}

impl TryFrom<ModeRequest> for FailureMode {
    type Error = ModeError;

    fn try_from(request: ModeRequest) -> Result<Self, ModeError> {
        Ok(match request.mode.as_str() {
            "up" => Self::Up,
            "down" => Self::Down,
            "hang" => Self::Hang,
            "error" => Self::Error { status: error_status(request.status, DEFAULT_ERROR_STATUS)? },
            "slow" => Self::Slow {
                latency_ms: bounded("latencyMs", request.latency_ms, DEFAULT_LATENCY_MS, 0, MAX_LATENCY_MS)?,
            },
            "late" => {
                Self::Late { latency_ms: bounded("latencyMs", request.latency_ms, DEFAULT_LATE_MS, 0, MAX_LATENCY_MS)? }
            }
            "throttle" => Self::Throttle {
                retry_after_secs: bounded(
                    "retryAfterSecs",
                    request.retry_after_secs,
                    DEFAULT_RETRY_AFTER_SECS,
                    0,
                    MAX_RETRY_AFTER_SECS,
                )?,
            },
            "flap" => {
                Self::Flap { period_ms: bounded("periodMs", request.period_ms, DEFAULT_PERIOD_MS, 1, MAX_PERIOD_MS)? }
            }
            "reject" => Self::Reject { status: error_status(request.status, DEFAULT_REJECT_STATUS)? },
            other => return Err(ModeError::Unknown(other.to_owned())),
        })
    }
}

/// The current mode and when it was set (flap phases count from then).
#[derive(Debug, Clone, Copy)]
pub struct ModeState {
    pub mode: FailureMode,
    /// Monotonic time the mode was set, for phase arithmetic.
    pub since: Instant,
    /// The same moment as Unix milliseconds, for display.
    pub since_ms: u64,
}

/// What the API does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it normally.
    Pass,
    /// Handle it normally after waiting.
    Delay(Duration),
    /// Handle it now, and hold the answer this long.
    Late(Duration),
    /// Wait until the mode changes, then answer 503.
    Hang,
    /// The listener is closed but this request came over a connection that
    /// was already open: answer 503 and close the connection.
    Refuse,
    /// Answer with an error right away.
    Fail(Failure),
}

/// An error answer chosen by a mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub status: u16,
    /// The `error` field of the JSON body.
    pub error: &'static str,
    /// Seconds for the `Retry-After` header, if any.
    pub retry_after_secs: Option<u64>,
}

impl ModeState {
    /// What to do with a request to `route` arriving at `now`.
    pub fn verdict(&self, route: Route, now: Instant) -> Verdict {
        match self.mode {
            FailureMode::Up => Verdict::Pass,
            FailureMode::Down => Verdict::Refuse,
            FailureMode::Hang => Verdict::Hang,
            FailureMode::Error { status } => {
                Verdict::Fail(Failure { status, error: "internal", retry_after_secs: None })
            }
            FailureMode::Slow { latency_ms } => Verdict::Delay(Duration::from_millis(latency_ms)),
            FailureMode::Late { latency_ms } => Verdict::Late(Duration::from_millis(latency_ms)),
            FailureMode::Throttle { retry_after_secs } => {
                Verdict::Fail(Failure { status: 429, error: "throttled", retry_after_secs: Some(retry_after_secs) })
            }
            FailureMode::Flap { period_ms } => {
                let elapsed = now.saturating_duration_since(self.since).as_millis();
                match (elapsed / u128::from(period_ms.max(1))) % 2 {
                    0 => Verdict::Pass,
                    _ => Verdict::Fail(Failure { status: 500, error: "internal", retry_after_secs: None }),
                }
            }
            FailureMode::Reject { status } if matches!(route, Route::CreateCase | Route::PostEvent) => {
                Verdict::Fail(Failure { status, error: "validation", retry_after_secs: None })
            }
            FailureMode::Reject { .. } => Verdict::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(mode: &str) -> Result<FailureMode, ModeError> {
        FailureMode::try_from(ModeRequest { mode: mode.to_owned(), ..ModeRequest::default() })
    }

    fn state(mode: FailureMode, since: Instant) -> ModeState {
        ModeState { mode, since, since_ms: 0 }
    }

    #[test]
    fn defaults_fill_missing_parameters() {
        assert_eq!(parse("error"), Ok(FailureMode::Error { status: 500 }));
        assert_eq!(parse("reject"), Ok(FailureMode::Reject { status: 422 }));
        assert_eq!(parse("slow"), Ok(FailureMode::Slow { latency_ms: 1_000 }));
        assert_eq!(parse("late"), Ok(FailureMode::Late { latency_ms: 15_000 }), "longer than any deadline");
        assert_eq!(parse("throttle"), Ok(FailureMode::Throttle { retry_after_secs: 1 }));
        assert_eq!(parse("flap"), Ok(FailureMode::Flap { period_ms: 1_000 }));
    }

    #[test]
    fn refuses_unknown_modes_and_out_of_range_parameters() {
        assert_eq!(parse("sideways"), Err(ModeError::Unknown("sideways".to_owned())));
        let request = ModeRequest { mode: "error".to_owned(), status: Some(200), ..ModeRequest::default() };
        assert_eq!(FailureMode::try_from(request).map_err(|e| e.code()), Err("invalid_parameter"));
        let request = ModeRequest { mode: "flap".to_owned(), period_ms: Some(0), ..ModeRequest::default() };
        assert!(FailureMode::try_from(request).is_err());
    }

    #[test]
    fn serialises_as_the_admin_api_shows_it() {
        let json = serde_json::to_value(FailureMode::Throttle { retry_after_secs: 5 }).ok();
        assert_eq!(json, Some(serde_json::json!({"mode": "throttle", "retryAfterSecs": 5})));
        let json = serde_json::to_value(FailureMode::Up).ok();
        assert_eq!(json, Some(serde_json::json!({"mode": "up"})));
    }

    #[test]
    fn flap_alternates_starting_with_service() {
        let start = Instant::now();
        let flap = state(FailureMode::Flap { period_ms: 100 }, start);
        let at = |ms| flap.verdict(Route::Lookup, start + Duration::from_millis(ms));
        assert_eq!(at(0), Verdict::Pass);
        assert_eq!(at(99), Verdict::Pass);
        assert!(matches!(at(100), Verdict::Fail(Failure { status: 500, .. })));
        assert!(matches!(at(199), Verdict::Fail(_)));
        assert_eq!(at(200), Verdict::Pass);
    }

    #[test]
    fn reject_fails_only_case_creation() {
        let reject = state(FailureMode::Reject { status: 422 }, Instant::now());
        let now = Instant::now();
        assert_eq!(reject.verdict(Route::Lookup, now), Verdict::Pass);
        assert_eq!(reject.verdict(Route::FindCases, now), Verdict::Pass);
        assert!(matches!(
            reject.verdict(Route::CreateCase, now),
            Verdict::Fail(Failure { status: 422, error: "validation", .. })
        ));
    }

    #[test]
    fn throttle_carries_retry_after() {
        let throttle = state(FailureMode::Throttle { retry_after_secs: 7 }, Instant::now());
        assert!(matches!(
            throttle.verdict(Route::CreateCase, Instant::now()),
            Verdict::Fail(Failure { status: 429, retry_after_secs: Some(7), .. })
        ));
    }
}
