//! `failsoft-lab demo`: the CRM simulator and the native facade on loopback,
//! and a short scripted scenario against them: lookups and a case while the
//! CRM is up, down, hung and back, with what each answered and how fast.
//!
//! The outage drill (a later issue) grows this into the full 8-minute run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::process::Service;

/// Demo-only secrets: generated per run, never written anywhere.
fn ephemeral_secret(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("demo-{tag}-{nanos:x}-{}", std::process::id())
}

const VIP: &str = "+44 20 7946 0001";
const GOLD: &str = "+1 (317) 555-0102";
const NEVER_SEEN: &str = "+33 1 70 36 00 03";
const UNKNOWN_TO_CRM: &str = "+49 30 901820 04";

/// The demo's settings: a 1.5 s deadline and a 2 s freshness window keep
/// the scenario short; everything else is the production default.
const DEADLINE_MS: u64 = 1_500;
const FRESHNESS_SECS: u64 = 2;
const COOL_DOWN_MS: u64 = 2_000;

struct Demo {
    http: reqwest::Client,
    edge: String,
    admin: String,
    token: String,
    failures: usize,
    pending: usize,
}

pub async fn run() -> anyhow::Result<()> {
    let token = ephemeral_secret("token");
    let sim = Service::start(
        "crm-sim",
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "warn".to_owned())],
    )?;
    let edge = Service::start(
        "failsoft-edge",
        &["--listen", "127.0.0.1:0"],
        &[
            ("FAILSOFT_CRM_URL", sim.url("api").to_owned()),
            ("FAILSOFT_AUTH_TOKEN", token.clone()),
            ("FAILSOFT_CACHE_KEY_SECRET", ephemeral_secret("cache")),
            ("FAILSOFT_WEBHOOK_SECRET", ephemeral_secret("webhook")),
            ("FAILSOFT_CRM_DEADLINE_MS", DEADLINE_MS.to_string()),
            ("FAILSOFT_FRESHNESS_SECS", FRESHNESS_SECS.to_string()),
            ("FAILSOFT_NOT_FOUND_FRESHNESS_SECS", FRESHNESS_SECS.to_string()),
            ("FAILSOFT_BREAKER_FAILURE_THRESHOLD", "3".to_owned()),
            ("FAILSOFT_BREAKER_COOL_DOWN_MS", COOL_DOWN_MS.to_string()),
            ("FAILSOFT_LOG", "warn".to_owned()),
            // The tour has no SQS: its queued case stays in the edge.
            ("FAILSOFT_DEV_LOCAL_QUEUE", "true".to_owned()),
        ],
    )?;
    let mut demo = Demo {
        http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        edge: edge.url("url").to_owned(),
        admin: sim.url("admin").to_owned(),
        token,
        failures: 0,
        pending: 0,
    };
    println!("CRM simulator {}  ·  facade {}", sim.url("api"), demo.edge);
    println!(
        "deadline {DEADLINE_MS} ms · freshness {FRESHNESS_SECS} s · breaker opens after 3 failures, cool-down {COOL_DOWN_MS} ms\n"
    );
    demo.admin_post(
        "/admin/customers",
        json!([
            {"phone": "+442079460001", "customerId": "C-1001", "tier": "vip", "name": "Ada", "vipFlag": true},
            {"phone": "+13175550102", "customerId": "C-1002", "tier": "gold", "name": "Grace"},
            {"phone": "+33170360003", "customerId": "C-1003", "tier": "standard", "name": "Alan"},
        ]),
    )
    .await?;

    println!(
        "{:<8} {:<34} {:>6}  {:<12} {:<10} {:<8} {:>6}  warning",
        "crm", "request", "http", "answer", "customer", "tier", "ms"
    );
    demo.phase("up").await?;
    demo.lookup("up", "lookup VIP (cold)", VIP).await?;
    demo.lookup("up", "lookup VIP again", VIP).await?;
    demo.lookup("up", "lookup gold (cold)", GOLD).await?;
    demo.lookup("up", "lookup a number the CRM lacks", UNKNOWN_TO_CRM).await?;
    demo.case("up", "create a case", VIP).await?;

    demo.phase("down").await?;
    wait_past_freshness().await;
    demo.lookup("down", "lookup VIP (stale in cache)", VIP).await?;
    demo.lookup("down", "lookup never-seen number", NEVER_SEEN).await?;
    demo.case("down", "create a case", GOLD).await?;

    demo.phase("up").await?;
    // Three failures opened the breaker; the first call after the cool-down
    // is its probe.
    tokio::time::sleep(Duration::from_millis(COOL_DOWN_MS + 200)).await;
    demo.lookup("back", "lookup VIP (probe closes breaker)", VIP).await?;
    demo.phase("hang").await?;
    wait_past_freshness().await;
    // Three timeouts open the breaker; after that, answers come at once.
    for i in 1..=5 {
        demo.lookup("hang", &format!("lookup VIP #{i}"), VIP).await?;
    }
    demo.case("hang", "create a case (breaker open)", GOLD).await?;

    demo.phase("up").await?;
    tokio::time::sleep(Duration::from_millis(COOL_DOWN_MS + 200)).await;
    demo.lookup("back", "lookup VIP (probe closes breaker)", VIP).await?;
    demo.lookup("back", "lookup gold", GOLD).await?;
    demo.case("back", "create a case", GOLD).await?;

    let ledger: Value = demo.http.get(format!("{}/admin/ledger", demo.admin)).send().await?.json().await?;
    let created = ledger.as_array().map_or(0, Vec::len);
    println!(
        "\nCRM ledger: {created} case(s) created synchronously; {} queued for the origin worker under their correlationId.",
        demo.pending
    );
    if demo.failures > 0 {
        bail!("{} interaction(s) failed (non-200)", demo.failures);
    }
    println!("Every interaction answered HTTP 200.");
    Ok(())
}

async fn wait_past_freshness() {
    tokio::time::sleep(Duration::from_millis(FRESHNESS_SECS * 1000 + 100)).await;
}

impl Demo {
    async fn phase(&self, mode: &str) -> anyhow::Result<()> {
        self.admin_post("/admin/mode", json!({"mode": mode})).await.with_context(|| format!("setting CRM {mode}"))
    }

    async fn admin_post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let resp = self.http.post(format!("{}{path}", self.admin)).json(&body).send().await?;
        if !resp.status().is_success() {
            bail!("simulator {path}: {}", resp.status());
        }
        Ok(())
    }

    async fn lookup(&mut self, crm: &str, label: &str, ani: &str) -> anyhow::Result<()> {
        let (status, body, ms) = self.post("/v1/customer-lookup", json!({"ani": ani})).await?;
        self.print(crm, label, status, &body["source"], &body, ms);
        Ok(())
    }

    async fn case(&mut self, crm: &str, label: &str, ani: &str) -> anyhow::Result<()> {
        let (status, body, ms) =
            self.post("/v1/cases", json!({"ani": ani, "subject": "Callback requested", "description": "demo"})).await?;
        if body["status"] == "PENDING" {
            self.pending += 1;
        }
        self.print(crm, label, status, &body["status"], &body, ms);
        Ok(())
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value, u128)> {
        let started = Instant::now();
        let resp = self.http.post(format!("{}{path}", self.edge)).bearer_auth(&self.token).json(&body).send().await?;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body, started.elapsed().as_millis()))
    }

    fn print(&mut self, crm: &str, label: &str, status: u16, answer: &Value, body: &Value, ms: u128) {
        if status != 200 {
            self.failures += 1;
        }
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let customer = body.get("customerId").or_else(|| body.get("caseId")).map_or("-".to_owned(), text);
        println!(
            "{crm:<8} {label:<34} {status:>6}  {:<12} {customer:<10} {:<8} {ms:>6}  {}",
            text(answer),
            body.get("tier").map_or("-".to_owned(), text),
            body.get("warning").map_or("-".to_owned(), text),
        );
    }
}
