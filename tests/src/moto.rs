//! moto's server (SQS and DynamoDB wire protocol) on an ephemeral loopback
//! port, for the tests that follow a message into the queue. Stopped by PID
//! when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

/// Where the set-up installs moto: `.venv/bin/moto_server` at the root.
pub fn moto_server_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
}

/// A free loopback port: bound, read and released. The window between
/// release and reuse is tiny, and the child's bind fails loudly if lost.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

pub struct Moto {
    child: Child,
    pub endpoint: String,
    pub sqs: aws_sdk_sqs::Client,
}

/// A message as SQS holds it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub group_id: String,
    pub dedup_id: String,
}

impl Moto {
    /// Starts moto and waits (bounded) until it answers.
    pub async fn start() -> Self {
        let path = moto_server_path();
        assert!(path.exists(), "{} is missing: run `scripts/setup.sh python`", path.display());
        let port = free_port();
        let child = Command::new(&path)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let endpoint = format!("http://127.0.0.1:{port}");
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await;
        let moto = Self { child, endpoint, sqs: aws_sdk_sqs::Client::new(&config) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.sqs.list_queues().send().await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    /// Creates a FIFO queue and returns its URL.
    pub async fn fifo_queue(&self, name: &str) -> String {
        let out = self
            .sqs
            .create_queue()
            .queue_name(format!("{name}.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .send()
            .await
            .expect("create the FIFO queue");
        out.queue_url().expect("a queue URL").to_owned()
    }

    /// Every message visible now (up to `max`), left in flight.
    pub async fn receive_all(&self, queue_url: &str, max: usize) -> Vec<Received> {
        let mut all = Vec::new();
        for _ in 0..max.div_ceil(10).max(1) {
            let out = self
                .sqs
                .receive_message()
                .queue_url(queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receive");
            let batch = out.messages();
            if batch.is_empty() {
                break;
            }
            for m in batch {
                let attr = |name: MessageSystemAttributeName| {
                    m.attributes().and_then(|a| a.get(&name)).cloned().unwrap_or_default()
                };
                all.push(Received {
                    body: m.body().unwrap_or_default().to_owned(),
                    group_id: attr(MessageSystemAttributeName::MessageGroupId),
                    dedup_id: attr(MessageSystemAttributeName::MessageDeduplicationId),
                });
            }
        }
        all
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
