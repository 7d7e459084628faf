//! Phone-number normalisation and the keys derived from it.
//!
//! A phone number is personal data, so it never appears in a cache key, a
//! queue group id or a log line. Keys are HMAC-SHA-256 of the normalised
//! number under a secret: a plain SHA-256 of a phone number is reversed by
//! enumerating the few billion valid numbers in minutes.

use alloc::string::String;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hex;

/// Fewest digits accepted: shorter strings are extensions or typos.
pub const MIN_DIGITS: usize = 8;
/// E.164 allows at most 15 digits.
pub const MAX_DIGITS: usize = 15;
/// Prefix of customer records in the edge's key-value store.
pub const CUSTOMER_KEY_PREFIX: &str = "cust:v1:";

/// A phone number in normalised form: an optional leading `+` and 8–15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// The normalised number, e.g. `+442071234567`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why an `ani` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAni {
    #[error("ani is empty")]
    Empty,
    #[error("ani may hold only digits, a leading '+', spaces, dashes, dots and parentheses")]
    BadCharacter,
    #[error("ani must have between 8 and 15 digits")]
    Length,
}

/// Normalises a caller number as Genesys sends it (`tel:+1 (317) 555-0100`,
/// `+44 20 7123 4567`, `0044.20.71234567`): drops a `tel:` scheme, strips
/// spaces, dashes, dots and parentheses, keeps a leading `+`, and accepts
/// 8–15 digits. Normalising a normalised number returns it unchanged.
pub fn normalize_phone(raw: &str) -> Result<Phone, InvalidAni> {
    let trimmed = raw.trim();
    let number = match trimmed.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("tel:") => &trimmed[4..],
        _ => trimmed,
    };
    let mut out = String::with_capacity(number.len());
    let mut digits = 0usize;
    for (i, c) in number.chars().enumerate() {
        match c {
            '0'..='9' => {
                digits += 1;
                out.push(c);
            }
            '+' if i == 0 => out.push('+'),
            ' ' | '-' | '.' | '(' | ')' => {}
            _ => return Err(InvalidAni::BadCharacter),
        }
    }
    match digits {
        0 if out.is_empty() => Err(InvalidAni::Empty),
        MIN_DIGITS..=MAX_DIGITS => Ok(Phone(out)),
        _ => Err(InvalidAni::Length),
    }
}

/// The secret-keyed, irreversible identity of a customer: 64 hex characters,
/// used as the SQS FIFO group and in the KV key.
pub fn entity_key(secret: &[u8], phone: &Phone) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(phone.as_str().as_bytes());
    hex::encode(&mac.finalize().into_bytes())
}

/// Whether `text` is an entity key as [`entity_key`] writes it: 64
/// lower-case hex characters. Another spelling of the same digest (upper
/// case) would be stored under a KV key no lookup ever reads.
pub fn is_entity_key(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The KV key of a customer record for an entity key.
pub fn customer_kv_key(entity_key: &str) -> String {
    let mut key = String::with_capacity(CUSTOMER_KEY_PREFIX.len() + entity_key.len());
    key.push_str(CUSTOMER_KEY_PREFIX);
    key.push_str(entity_key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_entity_key_is_64_lower_case_hex_characters() {
        let key = entity_key(b"secret", &normalize_phone("+442079460001").unwrap());
        assert!(is_entity_key(&key), "{key}");
        assert!(!is_entity_key(&key.to_ascii_uppercase()), "upper case is another KV key");
        assert!(!is_entity_key(&key[1..]));
        assert!(!is_entity_key(&alloc::format!("{key}0")));
        assert!(!is_entity_key(&"g".repeat(64)));
    }

    #[test]
    fn normalises_genesys_and_human_forms() {
        let cases = [
            ("tel:+13175550100", "+13175550100"),
            ("TEL:+1 (317) 555-0100", "+13175550100"),
            ("+44 20 7123 4567", "+442071234567"),
            ("0044.20.71234567", "00442071234567"),
            ("  +4915112345678 ", "+4915112345678"),
        ];
        for (raw, want) in cases {
            assert_eq!(normalize_phone(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        assert_eq!(normalize_phone(""), Err(InvalidAni::Empty));
        assert_eq!(normalize_phone("  "), Err(InvalidAni::Empty));
        assert_eq!(normalize_phone("+"), Err(InvalidAni::Length));
        assert_eq!(normalize_phone("1234567"), Err(InvalidAni::Length));
        assert_eq!(normalize_phone("+1234567890123456"), Err(InvalidAni::Length));
        assert_eq!(normalize_phone("12+34567890"), Err(InvalidAni::BadCharacter));
        assert_eq!(normalize_phone("+1 317 555 CALL"), Err(InvalidAni::BadCharacter));
        assert_eq!(normalize_phone("anonymous"), Err(InvalidAni::BadCharacter));
        assert_eq!(normalize_phone("sip:1234@host"), Err(InvalidAni::BadCharacter));
    }

    #[test]
    fn entity_key_is_keyed_and_stable() {
        let phone = normalize_phone("+442071234567").unwrap();
        let a = entity_key(b"secret-one", &phone);
        assert_eq!(a.len(), 64);
        assert_eq!(a, entity_key(b"secret-one", &normalize_phone("+44 20 7123 4567").unwrap()));
        assert_ne!(a, entity_key(b"secret-two", &phone));
        assert!(!a.contains("442071234567"));
        assert_eq!(customer_kv_key(&a), alloc::format!("cust:v1:{a}"));
    }

    #[test]
    fn entity_key_matches_rfc4231_hmac() {
        // Computed independently: echo -n '+442071234567' | openssl dgst -sha256 -hmac key
        let phone = normalize_phone("+442071234567").unwrap();
        assert_eq!(entity_key(b"key", &phone), "b53d2489f966efa87809997e28957542ec5be2d8b68845ece8657adf2f05d630");
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "(tel:)?\\+?[0-9 ().-]{0,24}") {
            if let Ok(once) = normalize_phone(&raw) {
                let twice = normalize_phone(once.as_str()).unwrap();
                prop_assert_eq!(once, twice);
            }
        }

        #[test]
        fn accepted_numbers_have_8_to_15_digits(raw in "\\PC{0,24}") {
            if let Ok(phone) = normalize_phone(&raw) {
                let digits = phone.as_str().chars().filter(char::is_ascii_digit).count();
                prop_assert!((MIN_DIGITS..=MAX_DIGITS).contains(&digits));
                prop_assert!(phone.as_str().chars().skip(1).all(|c| c.is_ascii_digit()));
            }
        }
    }
}
