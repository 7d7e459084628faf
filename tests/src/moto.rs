//! moto's server (SQS and DynamoDB wire protocol) on an ephemeral loopback
//! port, started by the lab's [`MotoServer`] (through its launcher) and
//! stopped by PID when dropped, plus an SQS client for the tests that follow
//! a message into the queue.

use std::time::{Duration, Instant};

use failsoft_lab::moto::MotoServer;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};

pub struct Moto {
    _server: MotoServer,
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
        let server = tokio::task::spawn_blocking(MotoServer::start)
            .await
            .expect("the start task")
            .expect("moto_server starts (run `scripts/setup.sh python`)");
        let endpoint = server.endpoint.clone();
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "moto"))
            .load()
            .await;
        let moto = Self { _server: server, endpoint, sqs: aws_sdk_sqs::Client::new(&config) };
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

/// An "SQS" that takes connections and never answers: the kernel completes
/// the handshake from the backlog, so a request hangs until its deadline.
/// Keep the listener alive for as long as the queue should hang.
pub fn hung_queue() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    (listener, format!("http://127.0.0.1:{port}/000000000000/hung.fifo"))
}
