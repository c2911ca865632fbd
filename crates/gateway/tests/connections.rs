//! Sockets that say nothing: a connection that never completes a request head (HTTP/1)
//! or a preface and a request (h2), or that stays idle between requests, is closed
//! within a bounded time, and one address or network cannot hold many such sockets.

mod common;

use std::time::Duration;

use common::*;
use gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The server closes silent sockets after half a second; every wait below allows ten
/// seconds, since a CI machine may be slow, and checks the close rather than sleeping.
const HEAD_TIMEOUT_MS: u64 = 500;
const PATIENCE: Duration = Duration::from_secs(10);

fn quick_timeouts(c: &mut GatewayConfig) {
    c.server.header_read_timeout_ms = HEAD_TIMEOUT_MS;
    c.server.idle_timeout_ms = 1_000;
    c.server.max_connections = 60;
    c.server.max_silent_connections_per_address = 20;
    c.server.max_silent_connections_per_subnet = 40;
}

async fn connect_from(gw: &TestGateway, source: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(gw.url.trim_start_matches("http://").parse().unwrap()).await.unwrap()
}

/// Waits for the server to close `stream` (EOF or reset), returning what it sent first.
async fn closed(stream: &mut TcpStream, what: &str) -> String {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a {what} open");
    String::from_utf8_lossy(&seen).into_owned()
}

async fn served(gw: &TestGateway, source: &str) -> bool {
    let c = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    c.get(format!("{}/healthz", gw.url)).send().await.is_ok_and(|r| r.status() == 200)
}

#[tokio::test]
async fn silent_sockets_are_closed_and_cannot_lock_out_other_clients() {
    let gw = spawn_gateway(vec![], quick_timeouts).await;
    // Sixty silent sockets from three addresses fill every place the gateway has.
    let mut silent = Vec::new();
    for source in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        for _ in 0..20 {
            silent.push(connect_from(&gw, source).await);
        }
    }
    // Each is closed within the head timeout, so a real client gets in.
    for (i, stream) in silent.iter_mut().enumerate() {
        closed(stream, &format!("silent socket {i}")).await;
    }
    assert!(served(&gw, "127.0.1.30").await, "a real client is served once the silent sockets are gone");
}

#[tokio::test]
async fn half_a_request_head_or_an_h2_preface_alone_is_closed() {
    let gw = spawn_gateway(vec![], quick_timeouts).await;
    let mut partial_head = connect_from(&gw, "127.0.0.41").await;
    partial_head.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let mut partial_preface = connect_from(&gw, "127.0.0.42").await;
    partial_preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut preface_only = connect_from(&gw, "127.0.0.43").await;
    // The preface and an empty SETTINGS frame, then silence.
    preface_only.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    closed(&mut partial_head, "half-sent request head").await;
    closed(&mut partial_preface, "partial h2 preface").await;
    closed(&mut preface_only, "h2 connection that never sent a request").await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_request() {
    let gw = spawn_gateway(vec![], quick_timeouts).await;
    let mut stream = connect_from(&gw, "127.0.0.51").await;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let reply = closed(&mut stream, "kept-alive connection").await;
    assert!(reply.starts_with("HTTP/1.1 200"), "the request was answered first: {reply}");
}

#[tokio::test]
async fn an_idle_h2_connection_is_closed_after_its_request() {
    let gw = spawn_gateway(vec![], quick_timeouts).await;
    let mut stream = connect_from(&gw, "127.0.0.52").await;
    // The preface, empty SETTINGS, then HEADERS for `GET /healthz` on stream 1 (HPACK:
    // :method GET, :scheme http, :path /healthz, :authority x), ending the stream.
    let block = b"\x82\x86\x44\x08/healthz\x41\x01x";
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    frames.extend_from_slice(block);
    stream.write_all(&frames).await.unwrap();
    let reply = closed(&mut stream, "idle h2 connection").await;
    // Its SETTINGS and the response's HEADERS came before the close.
    assert!(reply.len() > 9, "{reply:?}");
}

#[tokio::test]
async fn one_address_or_network_cannot_hold_many_silent_sockets() {
    let gw = spawn_gateway(vec![], |c| {
        quick_timeouts(c);
        // Long enough that nothing closes during the test.
        c.server.header_read_timeout_ms = 60_000;
        c.server.max_silent_connections_per_address = 4;
        c.server.max_silent_connections_per_subnet = 6;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from(&gw, "127.0.2.1").await);
    }
    let mut fifth = connect_from(&gw, "127.0.2.1").await;
    let refused = closed(&mut fifth, "fifth silent socket of one address").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    // Two more from a neighbour fill the /24; the next neighbour is refused too.
    for _ in 0..2 {
        held.push(connect_from(&gw, "127.0.2.2").await);
    }
    let mut neighbour = connect_from(&gw, "127.0.2.3").await;
    let refused = closed(&mut neighbour, "silent socket past the network's cap").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    // Another network, and a client that speaks at once, are unaffected.
    assert!(served(&gw, "127.0.3.1").await);
    drop(held);
}
