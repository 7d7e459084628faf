//! The worker's throughput and CPU cost per message, on a fast local SQS.
//!
//! Starts fauxqs (an SQS emulator on Node 22) for the queues, dynalite (a
//! DynamoDB emulator on Node 22; `--dynamodb moto` for moto's server) for
//! the tables, the CRM simulator, preloads `--messages` case creations (or,
//! with `--kind refresh`, cache refreshes of customers the CRM has) in
//! `--groups` FIFO groups, then starts one `failsoft worker` and times it
//! until every message is delivered. Reports messages per second (wall
//! clock) and the worker process's own CPU time per message (user +
//! system, from /proc), so the emulators' cost is not counted.
//!
//! Run through `make bench-worker` (it installs fauxqs, dynalite and Node 22
//! under .local/bench and builds the binaries in the drill profile):
//!
//! ```text
//! make bench-worker BENCH_ARGS="--messages 10000 --groups 1000 --kind refresh"
//! ```

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use failsoft_lab::moto::MotoServer;
use failsoft_lab::process::Service;
use serde_json::{Value, json};

struct Args {
    messages: usize,
    groups: usize,
    concurrency: usize,
    fauxqs: PathBuf,
    dynalite: PathBuf,
    /// `dynalite` (default) or `moto`: what serves the worker's DynamoDB
    /// calls. The stack is made from the template in moto either way.
    dynamodb: String,
    /// `write` (default: case creations) or `refresh` (cache refreshes of
    /// customers the CRM has).
    kind: String,
    node: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        messages: 2_000,
        groups: 200,
        concurrency: 32,
        fauxqs: PathBuf::from(".local/bench/node_modules/fauxqs/dist/cli.js"),
        dynalite: PathBuf::from(".local/bench/node_modules/dynalite/cli.js"),
        dynamodb: "dynalite".to_owned(),
        kind: "write".to_owned(),
        node: PathBuf::from(".local/bench/node_modules/.bin/node"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--messages" => a.messages = value.parse().expect("--messages N"),
            "--groups" => a.groups = value.parse().expect("--groups N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--fauxqs" => a.fauxqs = value.into(),
            "--dynalite" => a.dynalite = value.into(),
            "--dynamodb" if value == "moto" || value == "dynalite" => a.dynamodb = value,
            "--kind" if value == "write" || value == "refresh" => a.kind = value,
            "--node" => a.node = value.into(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..300 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {port}");
}

/// A process's peak resident memory (VmHWM of /proc/PID/status), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process, from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after the name.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::main]
async fn main() {
    let a = args();
    let moto =
        MotoServer::start_with(failsoft_lab::moto::Auth::Iam).expect("moto_server (scripts/setup.sh installs it)");
    let sqs_port = free_port();
    let fauxqs = Killed(
        Command::new(&a.node)
            .arg(&a.fauxqs)
            .env("FAUXQS_PORT", sqs_port.to_string())
            .env("FAUXQS_LOGGER", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fauxqs starts (make bench-worker installs it)"),
    );
    wait_listening(sqs_port);
    let sim = Service::start(
        "crm-sim",
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[("RUST_LOG", "warn".to_owned())],
    )
    .expect("crm-sim starts");
    let sqs_endpoint = format!("http://127.0.0.1:{sqs_port}");
    // The template's stack in moto (DynamoDB, IAM), its queues copied to fauxqs.
    let stack = failsoft_lab::aws_stack::create(&failsoft_lab::aws_stack::StackRequest::new(&moto.endpoint))
        .await
        .expect("the stack is created from the template");
    let (queue_url, dlq_url) =
        failsoft_lab::aws_stack::mirror_queues(&stack, &sqs_endpoint).await.expect("fauxqs queues");
    // moto's server closes every connection after one answer (werkzeug's),
    // so each DynamoDB call would cost the worker a TCP connect that
    // DynamoDB's kept-open connections never ask; dynalite keeps them open.
    let mut _dynalite = None;
    let dynamodb_endpoint = if a.dynamodb == "dynalite" {
        let port = free_port();
        _dynalite = Some(Killed(
            Command::new(&a.node)
                .arg(&a.dynalite)
                .args(["--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("dynalite starts (make bench-worker installs it)"),
        ));
        wait_listening(port);
        let endpoint = format!("http://127.0.0.1:{port}");
        failsoft_lab::aws_stack::mirror_tables(&stack, &endpoint).await.expect("dynalite tables");
        endpoint
    } else {
        moto.endpoint.clone()
    };
    let worker = stack.worker().expect("the worker's key");
    let aws_env = vec![
        ("AWS_ENDPOINT_URL_SQS", sqs_endpoint.clone()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint.clone()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", worker.key.clone()),
        ("AWS_SECRET_ACCESS_KEY", worker.secret.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
    ];

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&sqs_endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new("bench", "bench", None, None, "bench"))
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let refreshes = a.kind == "refresh";
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    if refreshes {
        let generated = http
            .post(format!("{}/admin/customers/generate", sim.url("admin")))
            .json(&json!({"count": a.messages}))
            .send()
            .await
            .unwrap();
        assert!(generated.status().is_success(), "crm-sim generates customers: {}", generated.status());
    }
    let loading = Instant::now();
    for chunk in (0..a.messages).collect::<Vec<_>>().chunks(10) {
        let entries = chunk.iter().map(|i| {
            let id = format!("bench-{i:06}");
            let group = format!("{:064x}", i % a.groups);
            let case = json!({"phone": "+442079460000", "subject": "bench", "description": null,
                              "conversationId": null, "externalRef": id});
            let payload = if refreshes {
                // The simulator's generated customer number i.
                json!({"phone": format!("+1555{i:07}")})
            } else {
                json!({"operation": "create_case", "case": case})
            };
            let body = json!({"v": 1, "kind": a.kind, "correlationId": id, "entityKey": group,
                              "payload": payload, "submittedAt": now_ms()});
            SendMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .message_body(body.to_string())
                .message_group_id(group)
                .message_deduplication_id(id)
                .build()
                .unwrap()
        });
        sqs.send_message_batch().queue_url(&queue_url).set_entries(Some(entries.collect())).send().await.unwrap();
    }
    eprintln!("loaded {} messages in {:?}", a.messages, loading.elapsed());

    let mut worker_env: Vec<(&str, String)> = aws_env.clone();
    worker_env.extend([
        ("FAILSOFT_QUEUE_URL", queue_url.clone()),
        ("FAILSOFT_DLQ_URL", dlq_url),
        ("FAILSOFT_CRM_URL", sim.url("api").to_owned()),
        ("FAILSOFT_INTERNAL_SECRET", "bench-internal-secret-000000".to_owned()),
        ("FAILSOFT_ORIGIN_LISTEN", "127.0.0.1:0".to_owned()),
        ("FAILSOFT_OPERATOR_LISTEN", "127.0.0.1:0".to_owned()),
        ("FAILSOFT_RECEIVE_WAIT_SECS", "1".to_owned()),
        ("FAILSOFT_WRITE_SETTLE_MS", "0".to_owned()),
        ("FAILSOFT_WORKER_CONCURRENCY", a.concurrency.to_string()),
        ("FAILSOFT_REPLAY_RATE_MAX", "1000000".to_owned()),
        ("FAILSOFT_LOG", "warn".to_owned()),
    ]);
    let started = Instant::now();
    let worker = Service::start("failsoft", &["worker"], &worker_env).expect("the worker starts");
    let cpu_at_start = cpu_secs(worker.pid());
    let stats = format!("{}/admin/stats", sim.url("admin"));
    let deadline = Instant::now() + Duration::from_secs(1_800);
    // A write is delivered when the CRM has its case; a refresh when its
    // message has left the queue (recorded in DynamoDB, then deleted).
    loop {
        let done = if refreshes {
            let left = sqs
                .get_queue_attributes()
                .queue_url(&queue_url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .unwrap()
                .attributes
                .unwrap_or_default()
                .values()
                .map(|v| v.parse::<usize>().unwrap_or(usize::MAX))
                .fold(0, usize::saturating_add);
            a.messages.saturating_sub(left)
        } else {
            let stats = http.get(&stats).send().await.unwrap().json::<Value>().await.unwrap();
            stats["casesCreated"].as_u64().unwrap_or(0) as usize
        };
        if done >= a.messages {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {} delivered in 30 minutes", a.messages);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = started.elapsed();
    let cpu = cpu_secs(worker.pid()) - cpu_at_start;
    let n = a.messages as f64;
    let what = if refreshes { "cache refreshes" } else { "case creations" };
    println!("worker benchmark: {} {what} in {} FIFO groups, concurrency {}", a.messages, a.groups, a.concurrency);
    println!("  SQS: fauxqs (Node {}), DynamoDB: {}, CRM: crm-sim", node_version(&a.node), a.dynamodb);
    let calls = if refreshes {
        "look-up (CRM), last-known + record (DynamoDB, batched)"
    } else {
        "claim + COMPLETE (DynamoDB), create (CRM, with Idempotency-Key)"
    };
    println!("  per message: receive (batches of 10), {calls}, delete");
    println!("  wall time          {:>10.2} s", wall.as_secs_f64());
    println!("  throughput         {:>10.1} messages/s", n / wall.as_secs_f64());
    println!("  worker CPU         {:>10.2} s (user + system)", cpu);
    println!("  CPU per message    {:>10.3} ms", cpu * 1000.0 / n);
    println!("  worker RSS (max)   {:>10.1} MiB", peak_rss_kib(worker.pid()) as f64 / 1024.0);
    drop(worker);
    drop(fauxqs);
}

fn node_version(node: &PathBuf) -> String {
    Command::new(node)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
