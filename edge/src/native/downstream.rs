//! Downstream HTTP with reqwest; the deadline covers the whole exchange.

use std::time::Duration;

use crate::ports::{Downstream, OutboundRequest, OutboundResponse, TransportError};

#[derive(Clone)]
pub struct ReqwestDownstream {
    client: reqwest::Client,
}

impl ReqwestDownstream {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            // Under the origin's 5 s keep-alive limit (origin/src/http/serve.rs):
            // a pooled connection is dropped here before the server closes it,
            // so no request races a close.
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .expect("a TLS-less reqwest client always builds");
        Self { client }
    }
}

impl Default for ReqwestDownstream {
    fn default() -> Self {
        Self::new()
    }
}

impl Downstream for ReqwestDownstream {
    async fn send(&self, request: OutboundRequest, deadline_ms: u64) -> Result<OutboundResponse, TransportError> {
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| TransportError::Connect)?;
        let mut builder = self.client.request(method, &request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let exchange = async {
            let response = builder.send().await?;
            let status = response.status().as_u16();
            let retry_after =
                response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(OutboundResponse { status, retry_after, body })
        };
        match tokio::time::timeout(Duration::from_millis(deadline_ms), exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_timeout() => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::Connect),
            Err(_) => Err(TransportError::Timeout),
        }
    }
}
