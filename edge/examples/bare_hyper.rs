//! The reference for `make bench-http`: a bare hyper HTTP/1.1 server on
//! the same tokio runtime as the native edge, answering every request with
//! one fixed JSON body of a cache hit's size. It reads nothing, checks
//! nothing and stores nothing: what the native host cannot beat.
//!
//! `cargo run --profile drill -p failsoft-edge --example bare_hyper -- 127.0.0.1:0`
//! prints `bare-hyper listening http://{addr}` and serves until killed.

use std::convert::Infallible;

use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A cache hit's answer, as long as the facade's.
const ANSWER: &str = r#"{"found":true,"customerId":"C-1001","tier":"VIP","source":"cache","correlationId":"00000000-0000-4000-8000-000000000000"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("bare-hyper listening http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(ANSWER.as_bytes())));
                response
                    .headers_mut()
                    .insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
                Ok::<_, Infallible>(response)
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
