//! The floor for the proxy benchmark: the same HTTP libraries Palisade is built on
//! (hyper's server and client on Tokio), relaying each request to one upstream and
//! doing nothing else: no routing, no checks, no metrics. `bench/proxy.sh` measures it
//! beside Palisade and nginx with the same wrk settings and CPU pinning, so the table
//! shows how much of Palisade's cost is the libraries and how much is its own work.
//! `cargo run --release -p gateway --example hyper_proxy -- 127.0.0.1:9101 127.0.0.1:9100`
//!
//! Each client connection gets its own upstream connection, opened at its first request
//! and reopened after an error (the keep-alive pool of nginx's `proxy_pass`, without the
//! sharing). The worker thread count comes from `TOKIO_WORKER_THREADS`, as for Palisade.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

type Reply = Response<BoxBody<Bytes, hyper::Error>>;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9101".to_owned());
    let upstream = Arc::new(args.next().unwrap_or_else(|| "127.0.0.1:9100".to_owned()));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("hyper proxy listening on http://{} for http://{upstream}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let sender: Arc<Mutex<Option<SendRequest<Full<Bytes>>>>> = Arc::default();
                let service = service_fn(move |request: Request<Incoming>| {
                    let (upstream, sender) = (upstream.clone(), sender.clone());
                    async move { Ok::<_, Infallible>(relay(&upstream, &sender, request).await) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn relay(upstream: &str, sender: &Mutex<Option<SendRequest<Full<Bytes>>>>, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST);
    };
    let mut slot = sender.lock().await;
    if slot.as_ref().is_none_or(|s| s.is_closed()) {
        *slot = connect(upstream).await;
    }
    let Some(send) = slot.as_mut() else {
        return error(StatusCode::BAD_GATEWAY);
    };
    if send.ready().await.is_err() {
        *slot = None;
        return error(StatusCode::BAD_GATEWAY);
    }
    match send.send_request(Request::from_parts(parts, Full::new(body))).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => {
            *slot = None;
            error(StatusCode::BAD_GATEWAY)
        }
    }
}

async fn connect(upstream: &str) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(upstream).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(send)
}

fn error(status: StatusCode) -> Reply {
    let mut response = Response::new(Full::new(Bytes::new()).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}
