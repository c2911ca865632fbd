//! The listener's own defences, seen from the client: connection caps and
//! bodies sent too slowly.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn addr(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test]
async fn connections_past_the_per_address_cap_get_429_and_are_closed() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.max_connections_per_address = 2;
    })
    .await;
    let _a = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let _b = TcpStream::connect(addr(&gw.url)).await.unwrap();
    eventually(Duration::from_secs(5), "two connections counted", || gw.gateway.connections.open() == 2).await;
    let mut third = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let reply = read_all(&mut third).await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply}");
    assert!(reply.contains("\"code\":\"too_many_connections\""), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("retry-after: 1"));

    // Closing one frees its place: a normal request succeeds again.
    drop(_a);
    eventually(Duration::from_secs(5), "place freed", || gw.gateway.connections.open() == 1).await;
    // One client, one connection: a second would be the address's third.
    let c = client();
    let status = c.get(format!("{}/healthz", gw.url)).send().await.unwrap().status();
    assert_eq!(status, 200);
    let metrics = c.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_connections_refused_total{cap=\"per_address\"} 1"), "{metrics}");
}

#[tokio::test]
async fn connections_past_the_total_cap_get_503() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.max_connections = 1;
    })
    .await;
    let _held = TcpStream::connect(addr(&gw.url)).await.unwrap();
    eventually(Duration::from_secs(5), "one connection counted", || gw.gateway.connections.open() == 1).await;
    let mut next = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let reply = read_all(&mut next).await;
    assert!(reply.starts_with("HTTP/1.1 503"), "{reply}");
    assert!(reply.contains("\"type\":\"server_error\""), "{reply}");
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408_without_reaching_the_model() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| {
        c.server.body_read_timeout_ms = 600;
    })
    .await;
    let mut stream = TcpStream::connect(addr(&gw.url)).await.unwrap();
    let head = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nuser-agent: palisade-tests/1\r\ncontent-type: application/json\r\n\
                content-length: 1000\r\n\r\n{\"model\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    // ...and nothing more: the gateway must give up at the deadline, not wait forever.
    let reply = read_all(&mut stream).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("\"code\":\"body_timeout\""), "{reply}");
    assert_eq!(sim.stats.snapshot().served, 0);
}
