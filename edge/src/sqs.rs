//! The forwarder to SQS FIFO: `SendMessage` over the JSON protocol, signed
//! with SigV4, sent through the host's own [`Downstream`] port.
//!
//! Signing here rather than with the AWS SDK keeps one forwarder for every
//! host: Workers and Spin cannot run the SDK's runtime, and the native host
//! enqueues the very same bytes. The signing time comes from the host's
//! [`Clock`], because `wasm32-unknown-unknown` has no system clock.

use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use failsoft_shared::config::ConfigError;
use serde::Deserialize;

use crate::ports::{Clock, Downstream, Forwarder, OutboundRequest, PortError, QueueMessage};

/// Where and as whom to send. The credentials should be a narrow key that
/// may only `sqs:SendMessage` on this queue.
#[derive(Clone)]
pub struct SqsSettings {
    /// `FAILSOFT_QUEUE_URL`: the FIFO queue's URL (its host is the endpoint,
    /// so a local stand-in such as moto's server works unchanged).
    pub queue_url: String,
    /// `AWS_REGION` (default `us-east-1`).
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SqsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSettings")
            .field("queue_url", &self.queue_url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl SqsSettings {
    /// `None` when `FAILSOFT_QUEUE_URL` is unset (the native host then keeps
    /// its in-process queue); an error when it is set but incomplete.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let Some(queue_url) = get("FAILSOFT_QUEUE_URL") else {
            return Ok(None);
        };
        if endpoint_of(&queue_url).is_none() {
            return Err(ConfigError::new("FAILSOFT_QUEUE_URL", "must be an http(s) URL of an SQS queue"));
        }
        if !queue_url.ends_with(".fifo") {
            return Err(ConfigError::new("FAILSOFT_QUEUE_URL", "must be a FIFO queue (its name ends in .fifo)"));
        }
        let required = |name: &'static str| {
            get(name).ok_or_else(|| ConfigError::new(name, "is required when FAILSOFT_QUEUE_URL is set"))
        };
        Ok(Some(Self {
            region: get("AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned()),
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
            session_token: get("AWS_SESSION_TOKEN"),
            queue_url,
        }))
    }
}

/// `scheme://host[:port]/` of a queue URL: the JSON protocol posts there.
fn endpoint_of(queue_url: &str) -> Option<String> {
    let (scheme, rest) = queue_url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}/"))
}

/// Sends queue messages to SQS through a host's HTTP port.
pub struct SqsForwarder<D, C> {
    settings: SqsSettings,
    endpoint: String,
    http: D,
    clock: C,
}

impl<D: Downstream, C: Clock> SqsForwarder<D, C> {
    pub fn new(settings: SqsSettings, http: D, clock: C) -> Self {
        let endpoint = endpoint_of(&settings.queue_url).unwrap_or_default();
        Self { settings, endpoint, http, clock }
    }

    /// The signed `SendMessage` request for `message`.
    pub fn request(&self, message: &QueueMessage) -> Result<OutboundRequest, PortError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "QueueUrl": self.settings.queue_url,
            "MessageBody": message.body,
            "MessageGroupId": message.group_id,
            "MessageDeduplicationId": message.dedup_id,
        }))
        .map_err(|e| PortError(e.to_string()))?;
        let mut headers: Vec<(&'static str, String)> = vec![
            ("content-type", "application/x-amz-json-1.0".to_owned()),
            ("x-amz-target", "AmazonSQS.SendMessage".to_owned()),
        ];
        let signed = sign_v4(&self.settings, &self.endpoint, &headers, &body, self.clock.now_ms())?;
        headers.extend(signed);
        let headers = headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        Ok(OutboundRequest { method: "POST".to_owned(), url: self.endpoint.clone(), headers, body: Some(body) })
    }
}

/// Signs a POST to `url` and returns the headers to add.
fn sign_v4(
    settings: &SqsSettings,
    url: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
    now_ms: u64,
) -> Result<Vec<(&'static str, String)>, PortError> {
    let identity: Identity = Credentials::new(
        &settings.access_key_id,
        &settings.secret_access_key,
        settings.session_token.clone(),
        None,
        "failsoft-edge",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&settings.region)
        .name("sqs")
        .time(UNIX_EPOCH + Duration::from_millis(now_ms))
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| PortError(format!("sigv4 parameters: {e}")))?
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(name, value)| (*name, value.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|e| PortError(format!("sigv4 request: {e}")))?;
    let (instructions, _signature) =
        sign(signable, &params).map_err(|e| PortError(format!("sigv4 signing: {e}")))?.into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| {
            let name: &'static str = match name {
                "authorization" => "authorization",
                "x-amz-date" => "x-amz-date",
                "x-amz-security-token" => "x-amz-security-token",
                "x-amz-content-sha256" => "x-amz-content-sha256",
                _ => "x-amz-unknown",
            };
            (name, value.to_owned())
        })
        .collect())
}

#[derive(Deserialize)]
struct SqsError {
    #[serde(rename = "__type")]
    kind: Option<String>,
    message: Option<String>,
}

impl<D: Downstream, C: Clock> Forwarder for SqsForwarder<D, C> {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        let request = self.request(message)?;
        let response =
            self.http.send(request, deadline_ms).await.map_err(|e| PortError(format!("SQS unreachable: {e:?}")))?;
        if response.status == 200 {
            return Ok(());
        }
        let detail = serde_json::from_slice::<SqsError>(&response.body)
            .map(|e| format!("{} {}", e.kind.unwrap_or_default(), e.message.unwrap_or_default()))
            .unwrap_or_default();
        Err(PortError(format!("{ANSWERED}{}: {}", response.status, detail.trim())))
    }
}

/// The SQS code of a forward's error when SQS refused the message itself
/// (too large for the queue, characters it does not take): no retry can
/// succeed, so an outbox sets it aside instead of blocking on it. `None`
/// for the queue's own trouble (unreachable, throttled, denied).
pub fn refused_code(e: &PortError) -> Option<&'static str> {
    let rest = e.0.strip_prefix(ANSWERED)?;
    let kind = rest.split_once(": ")?.1.split_whitespace().next()?;
    failsoft_shared::sqs_refusal::refuses_the_message(kind)
}

/// How [`SqsForwarder`]'s errors for an answer begin ([`refused_code`]
/// reads them back).
const ANSWERED: &str = "SQS answered ";

/// The queue a host forwards to: SQS when `FAILSOFT_QUEUE_URL` is set,
/// otherwise the host's own fallback ([`NoQueue`] where the host has
/// nowhere durable to keep one, the in-process queue natively).
pub enum SqsOr<D, C, Otherwise = NoQueue> {
    Sqs(SqsForwarder<D, C>),
    Otherwise(Otherwise),
}

impl<D: Downstream, C: Clock, Otherwise> SqsOr<D, C, Otherwise> {
    /// SQS from `settings` when given, else `otherwise()`.
    pub fn new(settings: Option<SqsSettings>, http: D, clock: C, otherwise: impl FnOnce() -> Otherwise) -> Self {
        match settings {
            Some(settings) => Self::Sqs(SqsForwarder::new(settings, http, clock)),
            None => Self::Otherwise(otherwise()),
        }
    }
}

impl<D: Downstream, C: Clock, Otherwise: Forwarder> Forwarder for SqsOr<D, C, Otherwise> {
    async fn forward(&self, message: &QueueMessage, deadline_ms: u64) -> Result<(), PortError> {
        match self {
            Self::Sqs(sqs) => sqs.forward(message, deadline_ms).await,
            Self::Otherwise(otherwise) => otherwise.forward(message, deadline_ms).await,
        }
    }
}

/// No queue at all: every forward fails, so the facade drops refreshes
/// (logged and counted) and answers a write the CRM did not take
/// `NOT_ACCEPTED`, never a `PENDING` that nothing backs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQueue;

impl Forwarder for NoQueue {
    async fn forward(&self, _: &QueueMessage, _: u64) -> Result<(), PortError> {
        Err(PortError("no queue: FAILSOFT_QUEUE_URL is unset".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedClock;
    impl Clock for FixedClock {
        fn now_ms(&self) -> u64 {
            // 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
            1_440_938_160_000
        }
        fn random_u64(&self) -> u64 {
            4
        }
        async fn sleep_ms(&self, _: u64) {}
    }

    struct NoHttp;
    impl Downstream for NoHttp {
        async fn send(
            &self,
            _: OutboundRequest,
            _: u64,
        ) -> Result<crate::ports::OutboundResponse, crate::ports::TransportError> {
            Err(crate::ports::TransportError::Connect)
        }
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<SqsSettings>, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        SqsSettings::from_lookup(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    const BASE: [(&str, &str); 3] = [
        ("FAILSOFT_QUEUE_URL", "http://127.0.0.1:4566/123456789012/failsoft.fifo"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    ];

    #[test]
    fn settings_are_optional_but_complete_when_given() {
        assert!(settings(&[]).unwrap().is_none());
        let s = settings(&BASE).unwrap().unwrap();
        assert_eq!(s.region, "us-east-1");
        assert!(!format!("{s:?}").contains("EXAMPLEKEY"));
        assert_eq!(settings(&BASE[..2]).err().unwrap().setting, "AWS_SECRET_ACCESS_KEY");
        let standard = [("FAILSOFT_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/q"), BASE[1], BASE[2]];
        assert_eq!(settings(&standard).err().unwrap().setting, "FAILSOFT_QUEUE_URL");
        assert_eq!(
            endpoint_of("https://sqs.eu-west-1.amazonaws.com/1/q.fifo").unwrap(),
            "https://sqs.eu-west-1.amazonaws.com/"
        );
    }

    #[test]
    fn send_message_is_signed_json() {
        let forwarder = SqsForwarder::new(settings(&BASE).unwrap().unwrap(), NoHttp, FixedClock);
        let message = QueueMessage { group_id: "g1".into(), dedup_id: "d1".into(), body: r#"{"v":1}"#.into() };
        let req = forwarder.request(&message).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:4566/");
        let body: serde_json::Value = serde_json::from_slice(req.body.as_deref().unwrap()).unwrap();
        assert_eq!(body["MessageGroupId"], "g1");
        assert_eq!(body["MessageDeduplicationId"], "d1");
        assert_eq!(body["MessageBody"], r#"{"v":1}"#);
        let header = |n: &str| req.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(header("x-amz-date"), "20150830T123600Z");
        let auth = header("authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/sqs/aws4_request"),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target"), "{auth}");
        // Computed independently from the SigV4 specification (canonical
        // request, string to sign, derived key) in a few lines of Python
        // with hashlib/hmac over the same body, headers and time.
        assert!(auth.ends_with("Signature=313ebb02a6177ee1e808142f7f47e10eb4562728643594d6d7f2253c29d9347d"), "{auth}");
    }

    #[test]
    fn a_refusal_of_the_message_is_told_from_the_queue_s_trouble() {
        let answered = |detail: &str| PortError(format!("{ANSWERED}400: {detail}"));
        assert_eq!(
            refused_code(&answered("com.amazonaws.sqs#InvalidParameterValue too long")),
            Some("InvalidParameterValue")
        );
        assert_eq!(refused_code(&answered("InvalidMessageContents bad characters")), Some("InvalidMessageContents"));
        assert_eq!(refused_code(&answered("com.amazonaws.sqs#QueueDoesNotExist gone")), None);
        assert_eq!(refused_code(&answered("")), None);
        assert_eq!(refused_code(&PortError("SQS unreachable: Timeout".into())), None);
    }

    /// A fallback that records what reached it.
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<String>>);
    impl Forwarder for Recorded {
        async fn forward(&self, message: &QueueMessage, _: u64) -> Result<(), PortError> {
            self.0.lock().unwrap().push(message.dedup_id.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn sqs_when_configured_else_the_hosts_fallback() {
        let message = QueueMessage { group_id: "g1".into(), dedup_id: "d1".into(), body: "{}".into() };

        let configured = SqsOr::new(settings(&BASE).unwrap(), NoHttp, FixedClock, Recorded::default);
        assert!(matches!(configured, SqsOr::Sqs(_)));
        let err = configured.forward(&message, 100).await.expect_err("SQS is unreachable here");
        assert!(err.0.starts_with("SQS unreachable"), "{err}");

        let local = SqsOr::new(None, NoHttp, FixedClock, Recorded::default);
        local.forward(&message, 100).await.expect("the fallback takes it");
        let SqsOr::Otherwise(recorded) = &local else { panic!("not the fallback") };
        assert_eq!(*recorded.0.lock().unwrap(), ["d1"]);

        let none: SqsOr<NoHttp, FixedClock> = SqsOr::new(None, NoHttp, FixedClock, || NoQueue);
        let err = none.forward(&message, 100).await.expect_err("no queue");
        assert!(err.0.contains("FAILSOFT_QUEUE_URL"), "names the setting: {err}");
    }
}
