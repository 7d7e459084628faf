//! Downstream HTTP with the runtime's `fetch`. The deadline covers the whole
//! exchange, body included: the exchange races a timer, and a lost race
//! aborts the request (an `AbortController`) so no socket outlives it.

use std::pin::pin;
use std::time::Duration;

use failsoft_edge::ports::{Downstream, OutboundRequest, OutboundResponse, TransportError};
use futures_util::future::{Either, select};
use worker::js_sys::Uint8Array;
use worker::{AbortController, Delay, Fetch, Headers, Method, RequestInit};

#[derive(Clone, Copy, Default)]
pub struct FetchDownstream;

impl Downstream for FetchDownstream {
    async fn send(&self, request: OutboundRequest, deadline_ms: u64) -> Result<OutboundResponse, TransportError> {
        let headers = Headers::new();
        for (name, value) in &request.headers {
            headers.set(name, value).map_err(|_| TransportError::Connect)?;
        }
        let mut init = RequestInit::new();
        init.with_method(Method::from(request.method.to_owned())).with_headers(headers);
        if let Some(body) = &request.body {
            init.with_body(Some(Uint8Array::from(body.as_slice()).into()));
        }
        let outbound = worker::Request::new_with_init(&request.url, &init).map_err(|_| TransportError::Connect)?;
        let controller = AbortController::default();
        let signal = controller.signal();
        let exchange = async {
            let mut response = Fetch::Request(outbound).send_with_signal(&signal).await?;
            let status = response.status_code();
            let retry_after = response.headers().get("retry-after").ok().flatten();
            let body = response.bytes().await?;
            Ok::<_, worker::Error>(OutboundResponse { status, retry_after, body })
        };
        let timer = Delay::from(Duration::from_millis(deadline_ms));
        match select(pin!(exchange), pin!(timer)).await {
            Either::Left((Ok(response), _)) => Ok(response),
            Either::Left((Err(_), _)) => Err(TransportError::Connect),
            Either::Right(((), _)) => {
                controller.abort();
                Err(TransportError::Timeout)
            }
        }
    }
}
