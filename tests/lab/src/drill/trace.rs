//! One correlationId from end to end: the drill checks that the CRM
//! received every queued write and every delivered refresh under the
//! correlationId the facade answered with (`X-Correlation-Id`, which the
//! edge and the worker send on every call), so a support engineer can
//! follow one Data Action from Genesys through the queue into the CRM's
//! logs.

use std::collections::HashSet;

use serde::Serialize;

use super::traffic::{Kind, Record};

/// One call the CRM simulator received with a correlationId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrmCall {
    pub method: String,
    pub path: String,
    /// What the call was in any dialect (`lookup`, `createCase`,
    /// `findCases`, …), as the simulator classified it.
    pub route: String,
    pub correlation_id: String,
}

/// How many queued writes and delivered refreshes the CRM saw under their
/// own correlationId.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Traced {
    pub queued_writes: u64,
    pub queued_writes_traced: u64,
    pub refreshes: u64,
    pub refreshes_traced: u64,
    /// Up to ten correlationIds the CRM never saw, to look up in the logs.
    pub untraced_examples: Vec<String>,
    /// `GET /cases` calls the CRM received: the optional case search,
    /// which a CRM with only the two required calls must never be sent.
    pub case_searches: u64,
}

impl Traced {
    pub fn complete(&self) -> bool {
        self.queued_writes_traced == self.queued_writes && self.refreshes_traced == self.refreshes
    }
}

/// Matches queued writes (answered `PENDING`) to case creations (`POST
/// /cases`, or the vendor's) and delivered refreshes (their
/// correlationIds) to lookups.
pub fn trace<'a>(records: &[Record], refreshes: impl IntoIterator<Item = &'a str>, calls: &[CrmCall]) -> Traced {
    let seen = |route: &str| -> HashSet<&str> {
        calls.iter().filter(|c| c.route == route).map(|c| c.correlation_id.as_str()).collect()
    };
    let (creates, lookups) = (seen("createCase"), seen("lookup"));
    let mut traced = Traced::default();
    let mut examples = Vec::new();
    for r in records.iter().filter(|r| r.kind == Kind::Case && r.answer.as_deref() == Some("PENDING")) {
        traced.queued_writes += 1;
        if creates.contains(r.correlation_id.as_str()) {
            traced.queued_writes_traced += 1;
        } else if examples.len() < 10 {
            examples.push(r.correlation_id.clone());
        }
    }
    for id in refreshes {
        traced.refreshes += 1;
        if lookups.contains(id) {
            traced.refreshes_traced += 1;
        } else if examples.len() < 10 {
            examples.push(id.to_owned());
        }
    }
    traced.untraced_examples = examples;
    traced.case_searches = calls.iter().filter(|c| c.route == "findCases").count() as u64;
    traced
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, path: &str, id: &str) -> CrmCall {
        let route = match (method, path) {
            ("POST", "/cases") => "createCase",
            ("GET", "/customers") => "lookup",
            ("GET", "/cases") => "findCases",
            _ => "other",
        };
        CrmCall { method: method.into(), path: path.into(), route: route.into(), correlation_id: id.into() }
    }

    #[test]
    fn counts_what_the_crm_saw_under_the_right_route() {
        let calls = [call("POST", "/cases", "w-1"), call("GET", "/customers", "r-1"), call("GET", "/cases", "w-2")];
        let t = trace(&[], ["r-1", "r-2"], &calls);
        assert_eq!((t.refreshes, t.refreshes_traced), (2, 1));
        assert_eq!(t.untraced_examples, ["r-2"]);
        assert!(!t.complete());
        assert!(trace(&[], ["r-1"], &calls).complete());
    }
}
