//! The origin's dashboard in a real browser: a worker over moto and the CRM
//! simulator dead-letters a write the CRM refuses, then headless Chromium
//! (Debian's `chromium`, installed by `make setup`) loads `/dashboard`, runs
//! its script and dumps the rendered DOM. The five signals it shows, their
//! levels and thresholds, the overall level and the breaker must equal
//! `/v1/health` read around the same moment; the dead letter's correlationId
//! and reason must be in the table, and the depth chart must have points.
//! A screenshot is saved (its path is printed) and checked to be a real PNG.

mod origin_support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use failsoft_lab::process::bin_dir;
use origin_support::{OriginStack, Worker, wait_for};
use serde_json::{Value, json};

const PHONE: &str = "+44 20 7946 0302";
const SIGNALS: [&str; 5] = ["cacheHitRate", "crmLatency", "queueDepth", "dlqDepth", "degradedShare"];
/// Virtual time the page gets before its DOM is dumped: the first poll and
/// a few more (the script polls every 2 s; virtual time waits for fetches).
const VIRTUAL_TIME_MS: u64 = 7_000;
/// Bound on one Chromium run, in real time.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(90);
/// Reads of health, DOM, health until the two health reads agree.
const STABLE_ATTEMPTS: usize = 8;

// ── Chromium ─────────────────────────────────────────────────────────────

fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("chromium")).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "chromium is not on PATH: run `make setup` (scripts/setup.sh installs Debian's chromium); \
             this test drives the dashboard in headless Chromium"
        )
    })
}

/// One headless Chromium run in its own process group, killed (the whole
/// group: Chromium forks renderers) when dropped, even if the test panics.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling the process group our child leads.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            self.child.wait().ok();
        }
        std::fs::remove_dir_all(&self.profile).ok();
    }
}

/// Runs Chromium headless on `url` with `extra` flags; returns its stdout.
fn run_chromium(url: &str, extra: &[String], scratch: &Path) -> String {
    let profile = scratch.join(format!("chromium-profile-{}-{}", std::process::id(), extra.len()));
    let out_path = scratch.join(format!("chromium-stdout-{}-{}.html", std::process::id(), extra.len()));
    let stdout = std::fs::File::create(&out_path).expect("a file for Chromium's output");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--proxy-server=direct://",
            "--proxy-bypass-list=*",
            "--hide-scrollbars",
            "--window-size=1440,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::null())
        .process_group(0);
    let child = command.spawn().expect("chromium starts");
    let mut browser = Browser { child, profile };
    let deadline = Instant::now() + CHROMIUM_LIMIT;
    let status = loop {
        if let Some(status) = browser.child.try_wait().expect("waiting for chromium") {
            break status;
        }
        assert!(Instant::now() < deadline, "chromium did not finish within {CHROMIUM_LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(browser);
    assert!(status.success(), "chromium exited with {status}");
    let text = std::fs::read_to_string(&out_path).expect("Chromium's output");
    std::fs::remove_file(&out_path).ok();
    text
}

// ── the rendered DOM ─────────────────────────────────────────────────────

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// An element's start tag, as Chromium serialises it (`name="value"`).
#[derive(Debug)]
struct Tag {
    attrs: HashMap<String, String>,
    /// Byte offset just past the tag's `>`.
    end: usize,
}

/// The start tags of `dom` that carry `name="value"`.
fn tags_with(dom: &str, name: &str, value: &str) -> Vec<Tag> {
    let needle = format!(" {name}=\"{value}\"");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = dom[from..].find(&needle).map(|i| i + from) {
        let start = dom[..at].rfind('<').expect("inside a tag");
        let end = at + dom[at..].find('>').expect("the tag ends") + 1;
        found.push(Tag { attrs: attributes(&dom[start..end]), end });
        from = end;
    }
    found
}

fn attributes(tag: &str) -> HashMap<String, String> {
    let mut attrs = HashMap::new();
    let mut rest = tag.trim_start_matches('<').trim_end_matches('>');
    rest = rest.split_once(char::is_whitespace).map_or("", |(_, r)| r);
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().to_owned();
        let after = &rest[eq + 2..];
        let close = after.find('"').expect("a closing quote");
        attrs.insert(name, unescape(&after[..close]));
        rest = &after[close + 1..];
    }
    attrs
}

fn only(dom: &str, name: &str, value: &str) -> Tag {
    let mut tags = tags_with(dom, name, value);
    assert_eq!(tags.len(), 1, "one element with {name}=\"{value}\" in the dashboard:\n{dom}");
    tags.remove(0)
}

/// The text of the first element with `class="…"` after `from`.
fn text_of_class(dom: &str, from: usize, class: &str) -> String {
    let needle = format!("class=\"{class}\"");
    let at = from + dom[from..].find(&needle).unwrap_or_else(|| panic!("no .{class} after {from}"));
    let open = at + dom[at..].find('>').unwrap() + 1;
    let close = open + dom[open..].find('<').unwrap();
    unescape(&dom[open..close])
}

fn attr<'a>(tag: &'a Tag, name: &str) -> &'a str {
    tag.attrs.get(name).map(String::as_str).unwrap_or_else(|| panic!("no {name} in {tag:?}"))
}

// ── what /v1/health says ─────────────────────────────────────────────────

async fn fetch(stack: &OriginStack, url: &str) -> Value {
    let resp = stack.http.get(url).send().await.expect("the origin answers");
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.expect("JSON")
}

/// What of `/v1/health` the page must show: each signal's value and level,
/// the overall level and the breaker (not the sample ages, which tick).
fn shown_part(health: &Value) -> Value {
    let signals: serde_json::Map<String, Value> = SIGNALS
        .iter()
        .map(|name| {
            let s = &health["signals"][name];
            (name.to_string(), json!([s["value"], s["level"], s["warning"], s["critical"]]))
        })
        .collect();
    let outbox = &health["edgeOutbox"];
    json!({
        "signals": signals,
        "level": health["level"],
        "breaker": health["breaker"],
        "edgeOutbox": [outbox["entries"], outbox["level"]],
    })
}

/// Asserts the rendered DOM shows `health`.
fn check_signals(dom: &str, health: &Value) {
    for name in SIGNALS {
        let s = &health["signals"][name];
        let card = only(dom, "data-signal", name);
        let shown = text_of_class(dom, card.end, "value");
        match s["value"].as_f64() {
            None => {
                assert_eq!(attr(&card, "data-value"), "", "{name}: no value");
                assert_eq!(shown, "no data", "{name} shows no data");
            }
            Some(value) => {
                let data: f64 = attr(&card, "data-value").parse().expect("a number");
                assert_eq!(data, value, "{name}: the value of /v1/health");
                let number: f64 = shown.parse().unwrap_or_else(|_| panic!("{name} shows a number: {shown:?}"));
                assert!((number - value).abs() <= 0.5, "{name} shows {shown}, /v1/health says {value}");
            }
        }
        assert_eq!(attr(&card, "data-level"), s["level"].as_str().unwrap(), "{name}: level");
        let threshold = |key: &str| attr(&card, &format!("data-{key}")).parse::<f64>().expect("a threshold");
        assert_eq!(threshold("warning"), s["warning"].as_f64().unwrap(), "{name}: warning band");
        assert_eq!(threshold("critical"), s["critical"].as_f64().unwrap(), "{name}: critical band");
        for kind in ["warning", "critical"] {
            assert!(
                dom[card.end..].contains(&format!("data-threshold=\"{kind}\"")),
                "{name}: the {kind} band is drawn"
            );
        }
    }
    assert_eq!(attr(&only(dom, "id", "overall"), "data-level"), health["level"].as_str().unwrap(), "overall level");
    assert_eq!(attr(&only(dom, "id", "breaker"), "data-state"), health["breaker"].as_str().unwrap(), "breaker");
    let outbox = only(dom, "id", "edge-outbox");
    let entries = health["edgeOutbox"]["entries"].as_u64().map(|n| n.to_string()).unwrap_or_default();
    assert_eq!(attr(&outbox, "data-entries"), entries, "the edges' outbox entries");
    assert_eq!(attr(&outbox, "data-level"), health["edgeOutbox"]["level"].as_str().unwrap_or(""), "outbox level");
}

// ── the test ─────────────────────────────────────────────────────────────

fn artifacts() -> PathBuf {
    let dir = bin_dir().parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir).join("failsoft-artifacts");
    std::fs::create_dir_all(&dir).expect("the artifacts directory");
    dir
}

async fn dead_letter_one(stack: &OriginStack, worker: &Worker) -> String {
    stack.crm(json!({"mode": "reject"})).await;
    let id = "dash-refused-0";
    stack.enqueue_write(id, PHONE, "refused by the CRM").await;
    let letters = wait_for("one dead letter", Duration::from_secs(30), || async {
        let letters = stack.dead_letters().await;
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    let reason = letters[0].attributes.get("reason").cloned().expect("the DLQ copy has a reason");
    wait_for("the DLQ depth and the history in the origin", Duration::from_secs(20), || async {
        let health = fetch(stack, &format!("{}/v1/health", worker.operator_url())).await;
        let doc = fetch(stack, &format!("{}/v1/dashboard", worker.operator_url())).await;
        let dlq_sampled = health["signals"]["dlqDepth"]["value"].as_f64() >= Some(1.0);
        let queue_empty = health["signals"]["queueDepth"]["value"].as_f64() == Some(0.0);
        let listed = doc["deadLetters"].as_array().is_some_and(|d| d.iter().any(|d| d["correlationId"] == id));
        (dlq_sampled && queue_empty && listed).then_some(())
    })
    .await;
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_v1_health_says() {
    chromium();
    let stack = OriginStack::start().await;
    let worker = stack.worker(&[]).await;
    let reason = dead_letter_one(&stack, &worker).await;
    let page = format!("{}/dashboard", worker.operator_url());
    let health_url = format!("{}/v1/health", worker.operator_url());
    let scratch = artifacts();

    // Values move while depths are sampled: compare the DOM with a health
    // document that did not change while the page rendered.
    let mut agreed = None;
    for _ in 0..STABLE_ATTEMPTS {
        let before = fetch(&stack, &health_url).await;
        let (url, dir) = (page.clone(), scratch.clone());
        let dom = tokio::task::spawn_blocking(move || run_chromium(&url, &["--dump-dom".to_owned()], &dir))
            .await
            .expect("chromium ran");
        let after = fetch(&stack, &health_url).await;
        if shown_part(&before) == shown_part(&after) {
            agreed = Some((dom, after));
            break;
        }
    }
    let (dom, health) = agreed.expect("/v1/health stood still while the page rendered");

    let status = only(&dom, "id", "status");
    assert!(attr(&status, "data-polls").parse::<u32>().unwrap() >= 1, "the page polled: {status:?}");
    check_signals(&dom, &health);
    assert_eq!(health["signals"]["dlqDepth"]["level"], "warning", "one dead letter is a warning: {health}");

    let rows = tags_with(&dom, "data-correlation-id", "dash-refused-0");
    assert_eq!(rows.len(), 1, "the dead letter is in the table:\n{dom}");
    assert_eq!(attr(&rows[0], "data-reason"), reason, "its reason, as the DLQ copy has it");
    assert_eq!(text_of_class(&dom, rows[0].end, "reason"), reason);
    assert!(!dom.contains("7946"), "no phone number on the dashboard");

    let chart = only(&dom, "id", "depth-chart");
    assert!(attr(&chart, "data-points").parse::<u32>().unwrap() >= 1, "the chart has samples");
    for series in ["queue-line", "dlq-line"] {
        let line = only(&dom, "id", series);
        assert!(attr(&line, "data-count").parse::<u32>().unwrap() >= 1, "{series}: {line:?}");
        assert!(attr(&line, "points").split(' ').count() >= 1 && !attr(&line, "points").is_empty(), "{series}");
    }

    let png = scratch.join("dashboard.png");
    std::fs::remove_file(&png).ok();
    let (url, dir, arg) = (page.clone(), scratch.clone(), format!("--screenshot={}", png.display()));
    tokio::task::spawn_blocking(move || run_chromium(&url, &[arg], &dir)).await.expect("chromium ran");
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("the screenshot {}: {e}", png.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(bytes.len() > 20_000, "a rendered page, not a blank one: {} bytes", bytes.len());
    println!("dashboard screenshot: {}", png.display());
}
