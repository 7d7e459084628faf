//! Signatures for the CRM's change webhook and for internal calls.
//!
//! The signed message is `"{timestamp}.{body}"` under HMAC-SHA-256, sent as
//! `X-Failsoft-Signature: v1=<hex>` with the Unix timestamp in seconds in
//! `X-Failsoft-Timestamp` (the scheme Stripe and Slack use). Binding the
//! timestamp into the MAC and bounding its age stops replays of a captured
//! request; the comparison is constant-time so the MAC cannot be guessed byte
//! by byte from response times.

use alloc::string::String;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hex;

/// Header carrying `v1=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-failsoft-signature";
/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-failsoft-timestamp";
/// Default accepted clock difference between signer and verifier.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

const SCHEME: &str = "v1=";

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature or timestamp header, or not in the `v1=<hex>` form.
    Missing,
    /// The timestamp is not a number.
    MalformedTimestamp,
    /// The timestamp is further from `now` than the tolerance.
    Expired,
    /// The MAC does not match.
    Mismatch,
}

impl SignatureError {
    /// Stable machine-readable code for error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "SIGNATURE_MISSING",
            Self::MalformedTimestamp => "SIGNATURE_TIMESTAMP_INVALID",
            Self::Expired => "SIGNATURE_EXPIRED",
            Self::Mismatch => "SIGNATURE_MISMATCH",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error branch is unreachable.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Failsoft-Signature` value for `body` signed at `timestamp_secs`.
pub fn sign(secret: &[u8], timestamp_secs: u64, body: &[u8]) -> String {
    let ts = alloc::format!("{timestamp_secs}");
    let tag = mac(secret, &ts, body).finalize().into_bytes();
    let mut out = String::from(SCHEME);
    out.push_str(&hex::encode(&tag));
    out
}

/// Checks a signature header against `body`, accepting timestamps within
/// `tolerance_secs` of `now_secs` in either direction.
pub fn verify(
    secret: &[u8],
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<(), SignatureError> {
    let (Some(signature), Some(timestamp)) = (signature, timestamp) else {
        return Err(SignatureError::Missing);
    };
    let tag = signature.trim().strip_prefix(SCHEME).and_then(hex::decode).ok_or(SignatureError::Missing)?;
    let timestamp = timestamp.trim();
    let ts: u64 = timestamp.parse().map_err(|_| SignatureError::MalformedTimestamp)?;
    if ts.abs_diff(now_secs) > tolerance_secs {
        return Err(SignatureError::Expired);
    }
    mac(secret, timestamp, body).verify_slice(&tag).map_err(|_| SignatureError::Mismatch)
}

/// Compares two secrets in time independent of where they differ (for
/// bearer tokens and Basic credentials).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec-test-secret";

    #[test]
    fn rfc4231_case_2_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Our message is "{ts}.{body}", so split the data at its first '.':
        // none here, hence sign the raw MAC through the same primitive.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokeN"));
        assert!(!constant_time_eq(b"token", b"token-longer"));
    }

    #[test]
    fn accepts_its_own_signature() {
        let sig = sign(SECRET, 1_700_000_000, b"{}");
        assert!(sig.starts_with("v1="));
        assert_eq!(verify(SECRET, Some(&sig), Some("1700000000"), b"{}", 1_700_000_100, 300), Ok(()));
    }

    #[test]
    fn refuses_missing_and_malformed() {
        let sig = sign(SECRET, 10, b"x");
        assert_eq!(verify(SECRET, None, Some("10"), b"x", 10, 300), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some(&sig), None, b"x", 10, 300), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some("sha256=00"), Some("10"), b"x", 10, 300), Err(SignatureError::Missing));
        assert_eq!(verify(SECRET, Some(&sig), Some("ten"), b"x", 10, 300), Err(SignatureError::MalformedTimestamp));
        assert_eq!(verify(b"other", Some(&sig), Some("10"), b"x", 10, 300), Err(SignatureError::Mismatch));
    }

    proptest! {
        #[test]
        fn any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..256), idx in any::<usize>(), bit in 0u8..8) {
            let ts = 1_800_000_000u64;
            let sig = sign(SECRET, ts, &body);
            let mut tampered: Vec<u8> = body.clone();
            let i = idx % tampered.len();
            tampered[i] ^= 1 << bit;
            prop_assert_eq!(verify(SECRET, Some(&sig), Some("1800000000"), &tampered, ts, 300), Err(SignatureError::Mismatch));
            // Flipping a byte of the tag itself fails too.
            let mut sig_bytes = sig.into_bytes();
            let j = 3 + idx % (sig_bytes.len() - 3);
            sig_bytes[j] = if sig_bytes[j] == b'0' { b'1' } else { b'0' };
            let sig = String::from_utf8(sig_bytes).unwrap();
            prop_assert_eq!(verify(SECRET, Some(&sig), Some("1800000000"), &body, ts, 300), Err(SignatureError::Mismatch));
        }

        #[test]
        fn timestamp_outside_window_fails(skew in 301u64..10_000_000, later in any::<bool>()) {
            let now = 1_800_000_000u64;
            let ts = if later { now + skew } else { now - skew };
            let sig = sign(SECRET, ts, b"{}");
            let ts_text = alloc::format!("{ts}");
            prop_assert_eq!(verify(SECRET, Some(&sig), Some(&ts_text), b"{}", now, 300), Err(SignatureError::Expired));
        }

        #[test]
        fn timestamp_inside_window_passes(skew in 0u64..=300, later in any::<bool>()) {
            let now = 1_800_000_000u64;
            let ts = if later { now + skew } else { now - skew };
            let sig = sign(SECRET, ts, b"{}");
            let ts_text = alloc::format!("{ts}");
            prop_assert_eq!(verify(SECRET, Some(&sig), Some(&ts_text), b"{}", now, 300), Ok(()));
        }
    }
}
