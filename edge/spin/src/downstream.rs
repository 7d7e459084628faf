//! Outbound HTTP through wasi:http, bounded by the deadline: the whole
//! exchange (connect, headers, body) races a monotonic-clock timer, and
//! losing the race drops the request, which makes the host abort it.

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use failsoft_edge::ports::{Downstream, OutboundRequest, OutboundResponse, TransportError};
use futures::future::{Either, select};
use spin_executor::CancelOnDropToken;
use spin_sdk::http::{ErrorCode, Method, Request, SendError};
use wasi::clocks::monotonic_clock;

#[derive(Clone, Copy, Default)]
pub struct SpinHttp;

impl Downstream for SpinHttp {
    async fn send(&self, request: OutboundRequest, deadline_ms: u64) -> Result<OutboundResponse, TransportError> {
        let method = match request.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            other => Method::Other(other.to_owned()),
        };
        let mut builder = Request::builder();
        builder.method(method).uri(request.url);
        for (name, value) in request.headers {
            builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder.body(body);
        }
        let exchange = spin_sdk::http::send::<_, spin_sdk::http::Response>(builder.build());
        match select(pin!(exchange), Timer::after_ms(deadline_ms)).await {
            Either::Left((Ok(response), _)) => Ok(OutboundResponse {
                status: *response.status(),
                retry_after: response.header("retry-after").and_then(|v| v.as_str()).map(str::to_owned),
                body: response.into_body(),
            }),
            Either::Left((Err(SendError::Http(code)), _)) if is_timeout(&code) => Err(TransportError::Timeout),
            Either::Left((Err(_), _)) => Err(TransportError::Connect),
            Either::Right(((), _)) => Err(TransportError::Timeout),
        }
    }
}

fn is_timeout(code: &ErrorCode) -> bool {
    matches!(code, ErrorCode::ConnectionTimeout | ErrorCode::ConnectionReadTimeout | ErrorCode::ConnectionWriteTimeout)
}

/// A future that is ready at a monotonic-clock instant, driven by the
/// spin-sdk executor's `poll` loop.
struct Timer {
    at_ns: u64,
    registration: Option<CancelOnDropToken>,
}

impl Timer {
    fn after_ms(ms: u64) -> Self {
        Self { at_ns: monotonic_clock::now().saturating_add(ms.saturating_mul(1_000_000)), registration: None }
    }
}

impl Future for Timer {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.at_ns {
            self.registration = None;
            return Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.at_ns);
        let token = spin_executor::push_waker_and_get_token(pollable, cx.waker().clone());
        self.registration = Some(token.into());
        Poll::Pending
    }
}
