//! The `X-Correlation-Id` of every API request, so a test can follow one
//! correlationId from the Data Action through the queue to the CRM.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::route::Route;

/// The header failsoft sends on every downstream call.
pub const HEADER: &str = "x-correlation-id";
/// The most requests remembered (the oldest are forgotten first).
const KEEP: usize = 100_000;

/// One request that carried a correlationId.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// What the request was, in any dialect: `lookup`, `createCase`,
    /// `findCases`, … (the vendor's path is in `path`).
    pub route: &'static str,
    pub correlation_id: String,
}

#[derive(Debug, Default)]
pub struct Correlations(Mutex<VecDeque<Seen>>);

impl Correlations {
    pub fn record(&self, method: &str, path: &str, route: Route, correlation_id: &str) {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() == KEEP {
            seen.pop_front();
        }
        seen.push_back(Seen {
            method: method.to_owned(),
            path: path.to_owned(),
            route: route.as_str(),
            correlation_id: correlation_id.to_owned(),
        });
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_in_order_and_forgets_the_oldest() {
        let c = Correlations::default();
        for i in 0..KEEP + 2 {
            c.record("GET", "/customers", Route::Lookup, &format!("c-{i}"));
        }
        let all = c.all();
        assert_eq!(all.len(), KEEP);
        assert_eq!(all[0].correlation_id, "c-2");
        c.clear();
        assert!(c.all().is_empty());
    }
}
