//! Signatures for the CRM's change webhook and for internal calls.
//!
//! A signed request carries three headers:
//!
//! - `X-Failsoft-Timestamp`: the signing time, Unix seconds;
//! - `X-Failsoft-Nonce`: 16 to 32 random bytes in hex, new for every request;
//! - `X-Failsoft-Signature: v1=<hex HMAC-SHA-256>` over the canonical string
//!   `"v1\n{METHOD}\n{path?query}\n{timestamp}\n{nonce}\n{body}"`.
//!
//! Binding the method and the request target means a captured request
//! cannot be sent to another route or another key (a push for customer A
//! moved onto B's path fails the MAC); binding the nonce lets the receiver
//! refuse the very same request twice ([`ReplayCache`]); the timestamp bounds
//! how long the receiver must remember nonces: 300 s into the past (the
//! configured tolerance) and [`MAX_FUTURE_SKEW_SECS`] into the future. The
//! comparison is constant-time so the MAC cannot be guessed byte by byte
//! from response times.

use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::hex;

/// Header carrying `v1=<hex HMAC>`.
pub const SIGNATURE_HEADER: &str = "x-failsoft-signature";
/// Header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-failsoft-timestamp";
/// Header carrying the request's random nonce, hex.
pub const NONCE_HEADER: &str = "x-failsoft-nonce";
/// Default accepted age of a signature (how far its timestamp may lie in
/// the past).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// How far a timestamp may lie in the future: clocks drift a little, but a
/// request signed for later would stay valid (and its nonce would have to
/// be remembered) for that much longer.
pub const MAX_FUTURE_SKEW_SECS: u64 = 60;
/// Random bytes in a nonce this side makes.
pub const NONCE_BYTES: usize = 16;
/// Longest nonce accepted, in hex characters (32 random bytes).
const MAX_NONCE_HEX: usize = 64;
/// Nonces a [`ReplayCache`] remembers by default: at the sync's pace (about
/// 60 signed pushes a second) that covers the whole 360 s window with room
/// to spare, in a few MiB.
pub const DEFAULT_REPLAY_CAPACITY: usize = 65_536;

const SCHEME: &str = "v1=";

/// Why a signed request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No signature, timestamp or nonce header, or not in the `v1=<hex>` form.
    Missing,
    /// The timestamp is not a number.
    MalformedTimestamp,
    /// The nonce is not 32 to 64 hex characters.
    MalformedNonce,
    /// The timestamp is older than the tolerance (or older than what the
    /// replay cache still remembers, see [`ReplayCache`]).
    Expired,
    /// The timestamp is more than [`MAX_FUTURE_SKEW_SECS`] ahead.
    FromFuture,
    /// The MAC does not match.
    Mismatch,
    /// This signature's nonce was already used.
    Replayed,
}

impl SignatureError {
    /// Stable machine-readable code for error bodies.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "SIGNATURE_MISSING",
            Self::MalformedTimestamp => "SIGNATURE_TIMESTAMP_INVALID",
            Self::MalformedNonce => "SIGNATURE_NONCE_INVALID",
            Self::Expired => "SIGNATURE_EXPIRED",
            Self::FromFuture => "SIGNATURE_FROM_FUTURE",
            Self::Mismatch => "SIGNATURE_MISMATCH",
            Self::Replayed => "SIGNATURE_REPLAYED",
        }
    }
}

/// What a signature covers besides the secret, the time and the nonce.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The HTTP method, upper case (`PUT`).
    pub method: &'a str,
    /// The request target as sent: path and, when there is one, `?query`.
    pub target: &'a str,
    pub body: &'a [u8],
}

impl<'a> Signed<'a> {
    pub fn new(method: &'a str, target: &'a str, body: &'a [u8]) -> Self {
        Self { method, target, body }
    }
}

/// The request target (`/path?query`) of an absolute URL, as a client sends
/// it: everything from the first `/` after the authority, without a
/// fragment; `/` when the URL has no path.
pub fn target_of(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let target = after_scheme.find(['/', '?']).map_or("/", |at| &after_scheme[at..]);
    let target = target.split('#').next().unwrap_or("/");
    if target.starts_with('?') || target.is_empty() { "/" } else { target }
}

/// The request target of a path and an optional query string (empty: none).
pub fn target(path: &str, query: Option<&str>) -> String {
    match query.filter(|q| !q.is_empty()) {
        Some(query) => alloc::format!("{path}?{query}"),
        None => String::from(path),
    }
}

/// The exact bytes the MAC covers (public so a peer in another language can
/// be checked against it).
pub fn canonical(signed: &Signed<'_>, timestamp: &str, nonce: &str) -> Vec<u8> {
    let head = alloc::format!("v1\n{}\n{}\n{timestamp}\n{nonce}\n", signed.method, signed.target);
    let mut out = Vec::with_capacity(head.len() + signed.body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(signed.body);
    out
}

fn mac(secret: &[u8], signed: &Signed<'_>, timestamp: &str, nonce: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; the error branch is unreachable.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&canonical(signed, timestamp, nonce));
    mac
}

/// A fresh nonce from [`NONCE_BYTES`] random bytes.
pub fn nonce(random: [u8; NONCE_BYTES]) -> String {
    hex::encode(&random)
}

/// The `X-Failsoft-Signature` value for `signed` at `timestamp_secs` with `nonce`.
pub fn sign(secret: &[u8], signed: &Signed<'_>, timestamp_secs: u64, nonce: &str) -> String {
    let ts = alloc::format!("{timestamp_secs}");
    let tag = mac(secret, signed, &ts, nonce).finalize().into_bytes();
    let mut out = String::from(SCHEME);
    out.push_str(&hex::encode(&tag));
    out
}

/// The three headers of a request signed at `timestamp_secs` with the nonce
/// made from `random`: what every signer sends.
pub fn headers(
    secret: &[u8],
    signed: &Signed<'_>,
    timestamp_secs: u64,
    random: [u8; NONCE_BYTES],
) -> [(&'static str, String); 3] {
    let nonce = nonce(random);
    let signature = sign(secret, signed, timestamp_secs, &nonce);
    [(TIMESTAMP_HEADER, alloc::format!("{timestamp_secs}")), (NONCE_HEADER, nonce), (SIGNATURE_HEADER, signature)]
}

/// The signature headers as the receiver found them (`None`: absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    pub signature: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
}

/// A signature that checked out: what the replay check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub timestamp_secs: u64,
    pub nonce: String,
}

impl Verified {
    /// A short fixed-length key for this nonce in a shared store (Spin's
    /// KV): the SHA-256 of the timestamp and the nonce, so what the caller
    /// chose never becomes a key as it is.
    pub fn store_key(&self) -> String {
        let digest =
            Sha256::new().chain_update(alloc::format!("{}\n{}", self.timestamp_secs, self.nonce).as_bytes()).finalize();
        alloc::format!("nonce:{}", hex::encode(&digest))
    }

    /// Seconds the nonce must be remembered from `now_secs`: until its
    /// timestamp is older than the tolerance.
    pub fn remember_secs(&self, now_secs: u64, tolerance_secs: u64) -> u64 {
        self.timestamp_secs.saturating_add(tolerance_secs).saturating_sub(now_secs).saturating_add(1)
    }
}

/// Checks the presented headers against `signed`, accepting timestamps up
/// to `tolerance_secs` old and [`MAX_FUTURE_SKEW_SECS`] ahead of `now_secs`.
/// A pass is not yet an acceptance: the caller must still see the nonce
/// unused ([`ReplayCache::admit`]).
pub fn verify(
    secret: &[u8],
    presented: &Presented<'_>,
    signed: &Signed<'_>,
    now_secs: u64,
    tolerance_secs: u64,
) -> Result<Verified, SignatureError> {
    let (Some(signature), Some(timestamp), Some(nonce)) = (presented.signature, presented.timestamp, presented.nonce)
    else {
        return Err(SignatureError::Missing);
    };
    let tag = signature.trim().strip_prefix(SCHEME).and_then(hex::decode).ok_or(SignatureError::Missing)?;
    let timestamp = timestamp.trim();
    let ts: u64 = timestamp.parse().map_err(|_| SignatureError::MalformedTimestamp)?;
    let nonce = nonce.trim();
    if !(2 * NONCE_BYTES..=MAX_NONCE_HEX).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SignatureError::MalformedNonce);
    }
    if ts > now_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(SignatureError::FromFuture);
    }
    if ts.saturating_add(tolerance_secs) < now_secs {
        return Err(SignatureError::Expired);
    }
    mac(secret, signed, timestamp, nonce).verify_slice(&tag).map_err(|_| SignatureError::Mismatch)?;
    Ok(Verified { timestamp_secs: ts, nonce: String::from(nonce) })
}

/// The nonces seen within the tolerance window, bounded.
///
/// A replay carries the timestamp it was signed with (the MAC covers it), so
/// an entry is the pair (timestamp, nonce), ordered by timestamp: entries
/// older than the tolerance are dropped first, as they can no longer pass
/// [`verify`]. When the cache is full of live entries, the oldest is
/// dropped and its timestamp becomes a floor: from then on a timestamp at
/// or below the floor is refused as expired. The window shrinks under a
/// flood (only holders of the secret can make one), but a forgotten nonce
/// can never be replayed; and no fresh request is refused for want of room.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    seen: BTreeSet<(u64, String)>,
    capacity: usize,
    /// Timestamps at or below this are refused (0: none yet).
    floor: u64,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        Self { seen: BTreeSet::new(), capacity: capacity.max(1), floor: 0 }
    }

    /// Records `verified`'s nonce, or refuses it as used (or older than the
    /// floor). `now_secs` and `tolerance_secs` as given to [`verify`].
    pub fn admit(&mut self, verified: &Verified, now_secs: u64, tolerance_secs: u64) -> Result<(), SignatureError> {
        while let Some((ts, _)) = self.seen.first()
            && ts.saturating_add(tolerance_secs) < now_secs
        {
            self.seen.pop_first();
        }
        if self.floor > 0 && verified.timestamp_secs <= self.floor {
            return Err(SignatureError::Expired);
        }
        let entry = (verified.timestamp_secs, verified.nonce.to_ascii_lowercase());
        if self.seen.contains(&entry) {
            return Err(SignatureError::Replayed);
        }
        if self.seen.len() >= self.capacity
            && let Some((oldest, _)) = self.seen.pop_first()
        {
            self.floor = self.floor.max(oldest);
            if verified.timestamp_secs <= self.floor {
                return Err(SignatureError::Expired);
            }
        }
        self.seen.insert(entry);
        Ok(())
    }

    /// Forgets `verified`'s nonce: the request it came with had no effect
    /// (the receiver failed, 5xx), so the signer may send the very same
    /// request again and it must then pass.
    pub fn forget(&mut self, verified: &Verified) {
        self.seen.remove(&(verified.timestamp_secs, verified.nonce.to_ascii_lowercase()));
    }

    /// Nonces remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Compares two secrets in time independent of where they differ (for
/// bearer tokens and Basic credentials).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Shortest shared secret accepted (HMAC keys, the cache-key secret).
pub const MIN_SECRET_BYTES: usize = 16;

/// A shared secret as both sides read it from a setting: surrounding
/// whitespace (a newline from `wrangler secret put`, a pasted space) is
/// trimmed, and what remains must be at least [`MIN_SECRET_BYTES`]; `None`
/// when too short. The edge and the origin both use this, so they always
/// sign with the same bytes.
pub fn secret_from_setting(raw: &str) -> Option<Vec<u8>> {
    let trimmed = raw.trim();
    (trimmed.len() >= MIN_SECRET_BYTES).then(|| trimmed.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec-test-secret";
    const NONCE: &str = "00112233445566778899aabbccddeeff";
    const BODY: &[u8] = b"{\"a\":1}";
    const PUSH: Signed<'static> = Signed { method: "PUT", target: "/v1/internal/cache/abc?x=1", body: BODY };

    fn presented<'a>(sig: &'a str, ts: &'a str, nonce: &'a str) -> Presented<'a> {
        Presented { signature: Some(sig), timestamp: Some(ts), nonce: Some(nonce) }
    }

    #[test]
    fn rfc4231_case_2_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn canonical_string_vectors() {
        // Computed independently: python3 -c "import hmac,hashlib; print(hmac.new(
        //   b'whsec-test-secret', b'v1\nPUT\n/v1/internal/cache/abc?x=1\n1700000000\n'
        //   b'00112233445566778899aabbccddeeff\n{\"a\":1}', hashlib.sha256).hexdigest())"
        assert_eq!(
            canonical(&PUSH, "1700000000", NONCE),
            b"v1\nPUT\n/v1/internal/cache/abc?x=1\n1700000000\n00112233445566778899aabbccddeeff\n{\"a\":1}".to_vec()
        );
        assert_eq!(
            sign(SECRET, &PUSH, 1_700_000_000, NONCE),
            "v1=51a1015bb8fb10df88a94f5b4b263c9c2cc8a3c9d9f907a320a4b027e61a0243"
        );
        // An empty body still ends the string with the newline after the nonce.
        let read = Signed::new("GET", "/v1/results/c-1", b"");
        assert_eq!(
            sign(SECRET, &read, 1_700_000_000, NONCE),
            "v1=52bb4b88edf30782d6fa2d01f4ce5c9e69ab7e1748680a44098cb376b0284801"
        );
        let verified = Verified { timestamp_secs: 1_700_000_000, nonce: NONCE.to_string() };
        assert_eq!(verified.store_key(), "nonce:1c715cd3658fa6fe01cedd6fcfcb2178608b10b7bcc0875c3785b992ad2ec702");
    }

    #[test]
    fn targets_of_urls() {
        assert_eq!(target_of("http://127.0.0.1:8080/v1/results/x"), "/v1/results/x");
        assert_eq!(target_of("https://edge.example/v1/internal/cache?x=1#frag"), "/v1/internal/cache?x=1");
        assert_eq!(target_of("https://edge.example"), "/");
        assert_eq!(target_of("https://edge.example?x=1"), "/");
        assert_eq!(target("/a", Some("b=1")), "/a?b=1");
        assert_eq!(target("/a", Some("")), "/a");
        assert_eq!(target("/a", None), "/a");
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokeN"));
        assert!(!constant_time_eq(b"token", b"token-longer"));
    }

    #[test]
    fn accepts_its_own_signature() {
        let [(_, ts), (_, nonce), (_, sig)] = headers(SECRET, &PUSH, 1_700_000_000, [7; NONCE_BYTES]);
        assert_eq!(ts, "1700000000");
        assert_eq!(nonce, "07".repeat(16));
        assert!(sig.starts_with("v1="));
        let verified = verify(SECRET, &presented(&sig, &ts, &nonce), &PUSH, 1_700_000_100, 300).unwrap();
        assert_eq!(verified, Verified { timestamp_secs: 1_700_000_000, nonce });
    }

    #[test]
    fn refuses_missing_and_malformed() {
        let sig = sign(SECRET, &PUSH, 10, NONCE);
        let p = |sig, ts, nonce| Presented { signature: sig, timestamp: ts, nonce };
        let check = |presented: Presented<'_>, secret: &[u8]| verify(secret, &presented, &PUSH, 10, 300);
        assert_eq!(check(p(None, Some("10"), Some(NONCE)), SECRET), Err(SignatureError::Missing));
        assert_eq!(check(p(Some(&sig), None, Some(NONCE)), SECRET), Err(SignatureError::Missing));
        assert_eq!(check(p(Some(&sig), Some("10"), None), SECRET), Err(SignatureError::Missing));
        assert_eq!(check(p(Some("sha256=00"), Some("10"), Some(NONCE)), SECRET), Err(SignatureError::Missing));
        assert_eq!(check(p(Some(&sig), Some("ten"), Some(NONCE)), SECRET), Err(SignatureError::MalformedTimestamp));
        let long = "a".repeat(66);
        for bad in ["0011", "zz112233445566778899aabbccddeeff", &long] {
            assert_eq!(check(p(Some(&sig), Some("10"), Some(bad)), SECRET), Err(SignatureError::MalformedNonce));
        }
        assert_eq!(check(p(Some(&sig), Some("10"), Some(NONCE)), b"other"), Err(SignatureError::Mismatch));
        assert!(check(p(Some(&sig), Some("10"), Some(NONCE)), SECRET).is_ok());
    }

    #[test]
    fn the_method_the_target_and_the_nonce_are_bound() {
        let sig = sign(SECRET, &PUSH, 10, NONCE);
        let other_nonce = "ffeeddccbbaa99887766554433221100";
        let swaps = [
            (Signed::new("POST", PUSH.target, BODY), NONCE),
            (Signed::new("PUT", "/v1/internal/cache/abd?x=1", BODY), NONCE),
            (Signed::new("PUT", "/v1/internal/cache/abc", BODY), NONCE),
            (Signed::new("PUT", "/v1/internal/cache/abc?x=2", BODY), NONCE),
            (PUSH, other_nonce),
        ];
        for (signed, nonce) in swaps {
            assert_eq!(
                verify(SECRET, &presented(&sig, "10", nonce), &signed, 10, 300),
                Err(SignatureError::Mismatch),
                "{signed:?} {nonce}"
            );
        }
    }

    #[test]
    fn the_future_is_bounded_tighter_than_the_past() {
        let now = 1_800_000_000u64;
        let at = |ts: u64| {
            let sig = sign(SECRET, &PUSH, ts, NONCE);
            verify(SECRET, &presented(&sig, &ts.to_string(), NONCE), &PUSH, now, 300).map(|_| ())
        };
        assert_eq!(at(now + 60), Ok(()));
        assert_eq!(at(now + 61), Err(SignatureError::FromFuture));
        assert_eq!(at(now - 300), Ok(()));
        assert_eq!(at(now - 301), Err(SignatureError::Expired));
    }

    fn verified(ts: u64, n: u8) -> Verified {
        Verified { timestamp_secs: ts, nonce: hex::encode(&[n; NONCE_BYTES]) }
    }

    #[test]
    fn a_nonce_is_admitted_once() {
        let mut cache = ReplayCache::new(8);
        assert_eq!(cache.admit(&verified(100, 1), 100, 300), Ok(()));
        assert_eq!(cache.admit(&verified(100, 1), 150, 300), Err(SignatureError::Replayed));
        assert_eq!(cache.admit(&verified(100, 2), 150, 300), Ok(()));
        // Remembered as long as the timestamp passes `verify`.
        assert_eq!(cache.admit(&verified(100, 1), 400, 300), Err(SignatureError::Replayed));
        // Forgotten on purpose (its request failed): the same request passes again.
        cache.forget(&verified(100, 2));
        assert_eq!(cache.admit(&verified(100, 2), 150, 300), Ok(()));
        // Then forgotten: `verify` refuses it as expired from here on.
        assert_eq!(cache.admit(&verified(401, 3), 401, 300), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_raises_its_floor_and_never_forgets_a_live_nonce() {
        let mut cache = ReplayCache::new(3);
        for n in 0..3u8 {
            assert_eq!(cache.admit(&verified(100 + u64::from(n), n), 110, 300), Ok(()));
        }
        // Full: the oldest (ts 100) goes and 100 becomes the floor.
        assert_eq!(cache.admit(&verified(110, 9), 110, 300), Ok(()));
        assert_eq!(cache.len(), 3);
        // The evicted nonce cannot come back; nothing at or below the floor can.
        assert_eq!(cache.admit(&verified(100, 0), 110, 300), Err(SignatureError::Expired));
        assert_eq!(cache.admit(&verified(99, 7), 110, 300), Err(SignatureError::Expired));
        // The ones still held are still refused as replays.
        assert_eq!(cache.admit(&verified(101, 1), 110, 300), Err(SignatureError::Replayed));
        // A new request older than everything held evicts and is refused itself.
        let mut tight = ReplayCache::new(1);
        assert_eq!(tight.admit(&verified(200, 1), 200, 300), Ok(()));
        assert_eq!(tight.admit(&verified(150, 2), 200, 300), Err(SignatureError::Expired));
        assert_eq!(tight.admit(&verified(200, 1), 200, 300), Err(SignatureError::Expired));
    }

    #[test]
    fn secrets_are_trimmed_and_at_least_16_bytes() {
        assert_eq!(secret_from_setting("  0123456789abcdef\n"), Some(b"0123456789abcdef".to_vec()));
        assert_eq!(secret_from_setting(" 0123456789abcde \n"), None);
        assert_eq!(secret_from_setting(""), None);
    }

    proptest! {
        #[test]
        fn any_flipped_byte_fails(body in proptest::collection::vec(any::<u8>(), 1..256), idx in any::<usize>(), bit in 0u8..8) {
            let ts = 1_800_000_000u64;
            let signed = Signed::new("POST", "/v1/internal/cache", &body);
            let sig = sign(SECRET, &signed, ts, NONCE);
            let mut tampered: Vec<u8> = body.clone();
            let i = idx % tampered.len();
            tampered[i] ^= 1 << bit;
            let forged = Signed::new("POST", "/v1/internal/cache", &tampered);
            prop_assert_eq!(verify(SECRET, &presented(&sig, "1800000000", NONCE), &forged, ts, 300), Err(SignatureError::Mismatch));
            // Flipping a byte of the tag itself fails too.
            let mut sig_bytes = sig.into_bytes();
            let j = 3 + idx % (sig_bytes.len() - 3);
            sig_bytes[j] = if sig_bytes[j] == b'0' { b'1' } else { b'0' };
            let sig = String::from_utf8(sig_bytes).unwrap();
            prop_assert_eq!(verify(SECRET, &presented(&sig, "1800000000", NONCE), &signed, ts, 300), Err(SignatureError::Mismatch));
        }

        #[test]
        fn timestamp_outside_window_fails(skew in 301u64..10_000_000, later in any::<bool>()) {
            let now = 1_800_000_000u64;
            let ts = if later { now + skew } else { now - skew };
            let sig = sign(SECRET, &PUSH, ts, NONCE);
            let ts_text = alloc::format!("{ts}");
            let expected = if later { SignatureError::FromFuture } else { SignatureError::Expired };
            prop_assert_eq!(verify(SECRET, &presented(&sig, &ts_text, NONCE), &PUSH, now, 300), Err(expected));
        }

        #[test]
        fn timestamp_inside_window_passes(skew in 0u64..=300, later in any::<bool>()) {
            let now = 1_800_000_000u64;
            let ts = if later { now + skew.min(MAX_FUTURE_SKEW_SECS) } else { now - skew };
            let sig = sign(SECRET, &PUSH, ts, NONCE);
            let ts_text = alloc::format!("{ts}");
            prop_assert!(verify(SECRET, &presented(&sig, &ts_text, NONCE), &PUSH, now, 300).is_ok());
        }

        #[test]
        fn the_cache_never_admits_a_nonce_twice(ops in proptest::collection::vec((0u64..400, 0u8..6), 1..200), capacity in 1usize..8) {
            // However full and whatever the order, a (timestamp, nonce) once
            // admitted is never admitted again while it would pass `verify`.
            let mut cache = ReplayCache::new(capacity);
            let mut admitted = alloc::collections::BTreeSet::new();
            let mut now = 1_000u64;
            for (age, n) in ops {
                now += 1;
                let v = verified(now - age.min(300), n);
                if cache.admit(&v, now, 300).is_ok() {
                    prop_assert!(admitted.insert((v.timestamp_secs, n)), "admitted twice: {:?}", v);
                }
                prop_assert!(cache.len() <= capacity);
            }
        }
    }
}
