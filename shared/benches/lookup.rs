//! The policy work of one lookup, without I/O: normalise the `ani`, derive
//! the cache key, read the entry's JSON, consult the breaker and the ladder.
//! The promise is under 20 µs.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use failsoft_shared::breaker::Breaker;
use failsoft_shared::cache::CacheEntry;
use failsoft_shared::config::Policy;
use failsoft_shared::edge_stats::{Answer, Cadence, EdgeStats};
use failsoft_shared::keys::{customer_kv_key, entity_key, normalize_phone};
use failsoft_shared::ladder::{FirstStep, Source, first_step};

const SECRET: &[u8] = b"bench-cache-key-secret-0123456789";
const ENTRY: &str = r#"{"record":{"found":true,"customerId":"C-000042","tier":"vip"},"fetchedAtMs":1800000000000}"#;

fn lookup_decision(c: &mut Criterion) {
    let policy = Policy::default();
    let now = 1_800_000_100_000u64;
    c.bench_function("cache_key", |b| {
        b.iter(|| {
            let phone = normalize_phone(black_box("tel:+44 20 7123 4567")).unwrap();
            customer_kv_key(&entity_key(SECRET, &phone))
        })
    });
    c.bench_function("lookup_decision", |b| {
        b.iter(|| {
            let phone = normalize_phone(black_box("tel:+44 20 7123 4567")).unwrap();
            let key = customer_kv_key(&entity_key(SECRET, &phone));
            let entry: CacheEntry = serde_json::from_str(black_box(ENTRY)).unwrap();
            let mut breaker = Breaker::default();
            let permitted = breaker.permit(now, &policy.breaker).may_call();
            let step = first_step(Some(&entry), now, &policy.freshness, permitted);
            assert_eq!(step, FirstStep::AnswerFresh);
            black_box(key)
        })
    });
    // Counting an answer sits on the response path: it must stay a few
    // additions, the due check included.
    let mut stats = EdgeStats::new("bench-isolate".into(), Cadence::default());
    c.bench_function("edge_stats_record", |b| {
        b.iter(|| {
            stats.record(black_box(Answer::Lookup(Source::Cache)), black_box(7), now);
            black_box(stats.is_due(now))
        })
    });
}

criterion_group!(benches, lookup_decision);
criterion_main!(benches);
