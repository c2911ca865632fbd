//! The log under a flood: an HTTP/2 rapid-reset client makes the h2 library warn once
//! per connection; the log keeps a few of those lines and counts the rest.
//!
//! One test in this file: it installs the process's global log subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing_subscriber::layer::SubscriberExt;

/// Everything the log subscriber writes, kept for the test to read.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().map(str::to_owned).collect()
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One rapid-reset connection: the preface, then `streams` requests each cancelled at
/// once, all in one write. True when the server answered with GOAWAY
/// `ENHANCE_YOUR_CALM` (which is when h2 warns).
async fn rapid_reset(url: &str, streams: u32) -> bool {
    let mut stream = TcpStream::connect(url.trim_start_matches("http://")).await.unwrap();
    let mut burst = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    burst.extend(frame(0x4, 0, 0, &[])); // SETTINGS
    for i in 0..streams {
        let id = 1 + 2 * i;
        // HEADERS (END_STREAM | END_HEADERS): :method GET, :scheme http, :path /healthz.
        let mut block = vec![0x82, 0x86, 0x04, 8];
        block.extend_from_slice(b"/healthz");
        burst.extend(frame(0x1, 0x5, id, &block));
        burst.extend(frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
    }
    stream.write_all(&burst).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the server kept a rapid-reset connection open");
    // Walk the frames for a GOAWAY (type 7) with ENHANCE_YOUR_CALM (0xb).
    let mut at = 0;
    while at + 9 <= received.len() {
        let len =
            (usize::from(received[at]) << 16) | (usize::from(received[at + 1]) << 8) | usize::from(received[at + 2]);
        if received[at + 3] == 0x7 && at + 9 + 8 <= received.len() {
            let code = u32::from_be_bytes(received[at + 13..at + 17].try_into().unwrap());
            return code == 0xb;
        }
        at += 9 + len;
    }
    false
}

fn suppressed(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("palisade_log_suppressed_total{") && l.contains("h2::"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rapid_reset_flood_writes_a_few_warnings_and_counts_the_rest() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::filter::LevelFilter::WARN)
        .with(gateway::log_limit::RepeatLimit)
        .with(tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || writer.clone()));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let gw = spawn_gateway(Vec::new(), |_| {}).await;
    let connections = 200;
    let started = Instant::now();
    let mut calmed = 0;
    for _ in 0..connections {
        if rapid_reset(&gw.url, 100).await {
            calmed += 1;
        }
    }
    let elapsed = started.elapsed();
    assert!(calmed > connections / 2, "the flood did not trip h2's reset limit ({calmed} of {connections})");

    let warned = captured.lines().into_iter().filter(|l| l.contains("reached limit")).count() as u64;
    // A burst, then a few a second for as long as the flood lasted.
    let bound =
        gateway::log_limit::BURST as u64 + (elapsed.as_secs_f64() * gateway::log_limit::PER_SECOND).ceil() as u64;
    assert!(warned >= 1 && warned <= bound, "{warned} warning lines for {calmed} connections in {elapsed:?}");
    let metrics = client().get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert_eq!(warned + suppressed(&metrics), calmed, "every warning is written or counted:\n{metrics}");
}
