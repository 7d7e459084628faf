//! The drill's callers: customers loaded into the CRM simulator (standard,
//! gold and VIP), some of them warmed into the edge's cache before the
//! traffic starts, and cold numbers, each looked up once, that the edge has
//! never been asked about: a share of them (half by default) customers the
//! CRM knows, which only the pre-warm sync puts in the edge's store, and
//! the rest numbers the CRM does not know either.
//!
//! Numbers carry a per-run prefix, so a second drill against the same
//! running stack finds none of the first one's records in the cache.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::{Value, json};

/// A customer's tier, as the CRM and the lookup answer name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Standard,
    Gold,
    Vip,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Gold => "gold",
            Self::Vip => "vip",
        }
    }

    /// One customer in ten is a VIP, two are gold.
    fn of(index: usize) -> Self {
        match index % 10 {
            0 => Self::Vip,
            1 | 2 => Self::Gold,
            _ => Self::Standard,
        }
    }
}

/// One caller.
#[derive(Debug, Clone)]
pub struct Customer {
    /// E.164, as the edge normalises it.
    pub phone: String,
    pub customer_id: String,
    pub tier: Tier,
    /// Looked up before the traffic starts, so the edge has its record.
    pub warm: bool,
    /// Whether the CRM knows the number (its 404 is a real answer too).
    pub in_crm: bool,
}

/// Every caller of one drill.
pub struct Population {
    pub customers: Vec<Customer>,
    warm: Vec<u32>,
    cold: Vec<u32>,
    next_cold: AtomicUsize,
}

impl Population {
    /// `warm` warmed customers and `cold` numbers for first-time lookups,
    /// `known_share` of them customers of the CRM, numbered under `run`
    /// (100..=999).
    pub fn new(run: u32, warm: usize, cold: usize, known_share: f64) -> Self {
        let mut customers = Vec::with_capacity(warm + cold);
        for i in 0..warm + cold {
            let is_warm = i < warm;
            customers.push(Customer {
                phone: format!("+1{run:03}{i:07}"),
                customer_id: format!("D{run}-{i:06}"),
                tier: Tier::of(i),
                warm: is_warm,
                // Spread evenly: the n-th cold number is known when the
                // running count of known ones steps up.
                in_crm: is_warm || {
                    let j = (i - warm) as f64;
                    ((j + 1.0) * known_share).floor() > (j * known_share).floor()
                },
            });
        }
        Self {
            customers,
            warm: (0..warm as u32).collect(),
            cold: (warm as u32..(warm + cold) as u32).collect(),
            next_cold: AtomicUsize::new(0),
        }
    }

    pub fn warm(&self) -> &[u32] {
        &self.warm
    }

    pub fn get(&self, index: u32) -> &Customer {
        &self.customers[index as usize]
    }

    /// The next never-seen number (they come round again only if the pool
    /// runs out, which its sizing avoids).
    pub fn next_cold(&self) -> Option<u32> {
        if self.cold.is_empty() {
            return None;
        }
        let n = self.next_cold.fetch_add(1, Ordering::Relaxed);
        Some(self.cold[n % self.cold.len()])
    }

    /// The records `POST /admin/customers` loads, in chunks of `chunk`.
    pub fn crm_records(&self, chunk: usize) -> Vec<Value> {
        let records: Vec<Value> = self
            .customers
            .iter()
            .filter(|c| c.in_crm)
            .map(|c| {
                json!({
                    "phone": c.phone,
                    "customerId": c.customer_id,
                    "tier": c.tier.as_str(),
                    "name": format!("Caller {}", c.customer_id),
                    "vipFlag": c.tier == Tier::Vip,
                })
            })
            .collect();
        records.chunks(chunk.max(1)).map(|c| Value::Array(c.to_vec())).collect()
    }
}

/// SplitMix64: a small, fast, seedable generator for the traffic's choices
/// (reproducible with `--seed`; nothing here needs cryptographic quality).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_and_numbers() {
        let p = Population::new(417, 20, 20, 0.9);
        assert_eq!(p.warm().len(), 20);
        assert_eq!(p.customers.iter().filter(|c| c.warm && c.tier == Tier::Vip).count(), 2);
        assert_eq!(p.get(0).phone, "+14170000000");
        assert!(p.customers.iter().all(|c| (8..=15).contains(&(c.phone.len() - 1))));
        assert_eq!(p.customers.iter().filter(|c| !c.in_crm).count(), 2);
        let cold: Vec<u32> = (0..21).filter_map(|_| p.next_cold()).collect();
        assert_eq!(cold[0], 20);
        assert_eq!(cold[20], 20, "the pool wraps");
        let loaded: usize = p.crm_records(7).iter().map(|c| c.as_array().unwrap().len()).sum();
        assert_eq!(loaded, 38);
        let half = Population::new(417, 10, 100, 0.5);
        assert_eq!(half.customers.iter().filter(|c| !c.warm && c.in_crm).count(), 50);
        assert_eq!(Population::new(417, 0, 10, 0.0).customers.iter().filter(|c| c.in_crm).count(), 0);
    }

    #[test]
    fn rng_is_reproducible_and_spread() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        let hits = (0..10_000).filter(|_| a.chance(0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
        assert!((0..1000).all(|_| a.below(5) < 5));
    }
}
