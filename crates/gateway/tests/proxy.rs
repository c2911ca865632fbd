//! The inference proxy as a client sees it: real listener, real upstreams.

mod common;

use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::*;
use drill::sim::SimConfig;
use futures_util::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn non_streaming_chat_passes_through_with_usage() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let response =
        client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert!(!body["choices"][0]["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(body["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn completions_embeddings_and_models_pass_through() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    let r: Value = c
        .post(format!("{}/v1/completions", gw.url))
        .json(&json!({"model": "m", "prompt": "say", "max_tokens": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["object"], "text_completion");
    let r: Value = c
        .post(format!("{}/v1/embeddings", gw.url))
        .json(&json!({"input": ["a", "b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    let r: Value = c.get(format!("{}/v1/models", gw.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["data"][0]["id"], "palisade-sim");
}

#[tokio::test]
async fn streamed_reply_arrives_complete_as_server_sent_events() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let response =
        client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(true)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    // role chunk, 5 tokens, finish chunk, [DONE]
    assert_eq!(events.len(), 8, "{text}");
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    let finish: Value = serde_json::from_str(events[6].trim_start_matches("data: ")).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
}

/// The client must receive each chunk while the upstream has not yet written
/// the next one: any buffering in the proxy would make this wait forever.
#[tokio::test]
async fn stream_chunks_are_relayed_without_buffering() {
    let mut up = scripted_upstream().await;
    let gw = spawn_gateway(vec![upstream("scripted", &up.server.url)], |_| {}).await;
    let request = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(true)).send();
    let (response, chunks) = tokio::join!(request, up.chunks.recv());
    let chunks = chunks.unwrap();
    let mut body = response.unwrap().bytes_stream();
    for i in 0..3 {
        let event = format!("data: {{\"n\":{i}}}\n\n");
        chunks.send(Bytes::from(event.clone())).await.unwrap();
        let received = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("chunk not relayed while the upstream stream is still open")
            .unwrap()
            .unwrap();
        assert_eq!(received, event.as_bytes());
    }
    drop(chunks);
    assert!(body.next().await.is_none(), "stream ends when the upstream's ends");
}

#[tokio::test]
async fn client_disconnect_mid_stream_frees_the_upstream_request() {
    let sim = spawn_sim(SimConfig { ttft: Duration::ZERO, tokens_per_s: 20, ..SimConfig::default() }).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let mut body = chat_body(true);
    body["max_tokens"] = json!(1000); // 50 s of generation if nobody hangs up
    let response = client().post(format!("{}/v1/chat/completions", gw.url)).json(&body).send().await.unwrap();
    let mut stream = response.bytes_stream();
    stream.next().await.unwrap().unwrap();
    assert_eq!(sim.stats.snapshot().in_flight, 1);
    drop(stream);
    eventually(Duration::from_secs(10), "the simulated model to see the disconnect", || {
        let s = sim.stats.snapshot();
        s.in_flight == 0 && s.cancelled == 1
    })
    .await;
    let up = &gw.gateway.pool().upstreams()[0];
    eventually(Duration::from_secs(10), "the gateway to release its in-flight slot", || up.in_flight() == 0).await;
}

#[tokio::test]
async fn upstream_down_gives_a_clean_502_then_503_once_the_breaker_opens() {
    let dead = dead_url().await;
    let gw = spawn_gateway(vec![upstream("dead", &dead)], |c| {
        c.proxy.max_attempts = 1;
        c.proxy.circuit_breaker.failure_threshold = 3;
        c.proxy.circuit_breaker.open_ms = 60_000;
        c.proxy.health_check.interval_ms = 3_600_000; // only the first check; the breaker is under test
    })
    .await;
    let c = client();
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").is_some();
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert!(retry_after);
        codes.push((status, body["error"]["code"].as_str().unwrap().to_owned()));
    }
    // The first check may already have marked it unhealthy; either way every
    // answer is a clean JSON 502/503 and the breaker ends it with 503s.
    for (status, code) in &codes {
        assert!(
            (*status == 502 && code == "upstream_unavailable") || (*status == 503 && code == "no_healthy_upstream"),
            "{codes:?}"
        );
    }
    assert_eq!(codes.last().unwrap().0, 503, "{codes:?}");
}

/// A model server that answers every connection with `first`, then `then` `repeat` times
/// over, whatever it was asked, and holds the connection open.
async fn raw_upstream(first: &'static [u8], then: &'static [u8], repeat: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(first).await;
                for _ in 0..repeat {
                    if socket.write_all(then).await.is_err() {
                        return;
                    }
                }
                // The proxy, not a close, must end the exchange.
                while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    url
}

#[tokio::test]
async fn a_model_server_that_does_not_speak_http_gets_a_clean_502() {
    let padding: &[u8] = b"x-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    for (case, first, then, repeat) in [
        ("not HTTP", &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..], &b""[..], 0),
        ("a head that never ends (4 MB of header lines)", b"HTTP/1.1 200 OK\r\n", padding, 50_000),
        ("a length that is not a number", b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n{}", b"", 0),
    ] {
        let url = raw_upstream(first, then, repeat).await;
        let gw = spawn_gateway(vec![upstream("broken", &url)], |c| {
            c.proxy.max_attempts = 1;
            c.proxy.health_check.interval_ms = 3_600_000;
        })
        .await;
        let started = Instant::now();
        let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{case}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "upstream_error", "{case}: {body}");
        // Refused at once (the first-byte timeout is 30 s), not after reading it all.
        assert!(started.elapsed() < Duration::from_secs(10), "{case}");
    }
}

#[tokio::test]
async fn a_broken_chunk_ends_the_stream_with_an_error_not_with_garbage() {
    let url = raw_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
          e\r\ndata: {\"a\":1}\n\n\r\nzz\r\ngarbage",
        b"",
        0,
    )
    .await;
    let gw = spawn_gateway(vec![upstream("broken", &url)], |c| c.proxy.max_attempts = 1).await;
    let sent = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(true)).send();
    let mut received = Vec::new();
    // The break may come before the head has gone out (the event is still held by the
    // leak scanner): then the request itself fails.
    let mut broke = true;
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(10), sent).await.expect("no answer") {
        assert_eq!(r.status(), 200);
        broke = false;
        let mut body = r.bytes_stream();
        while let Some(piece) = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("not ended") {
            match piece {
                Ok(data) => received.extend_from_slice(&data),
                Err(_) => broke = true,
            }
        }
    }
    assert!(broke, "the client must see the reply broke off");
    assert!(!String::from_utf8_lossy(&received).contains("garbage"), "{received:?}");
}

#[tokio::test]
async fn fails_over_to_a_second_upstream() {
    let dead = dead_url().await;
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("dead", &dead), upstream("sim", &sim.server.url)], |c| {
        c.proxy.health_check.interval_ms = 3_600_000; // passive failover only
    })
    .await;
    let c = client();
    for _ in 0..10 {
        let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(sim.stats.snapshot().served, 10);
}

#[tokio::test]
async fn slow_upstream_times_out_with_504() {
    let sim = spawn_sim(SimConfig { ttft: Duration::from_secs(30), ..SimConfig::default() }).await;
    let gw = spawn_gateway(vec![upstream("slow", &sim.server.url)], |c| {
        c.proxy.first_byte_timeout_ms = 300;
        c.proxy.max_attempts = 1;
    })
    .await;
    let started = Instant::now();
    let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_timeout");
    // Bound generous for slow CI; the point is "not the upstream's 30 s".
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_stalled_stream_is_cut_after_the_idle_timeout() {
    let mut up = scripted_upstream().await;
    let gw = spawn_gateway(vec![upstream("scripted", &up.server.url)], |c| c.proxy.idle_timeout_ms = 300).await;
    let request = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(true)).send();
    let (response, chunks) = tokio::join!(request, up.chunks.recv());
    let chunks = chunks.unwrap();
    let mut body = response.unwrap().bytes_stream();
    chunks.send(Bytes::from_static(b"data: {}\n\n")).await.unwrap();
    body.next().await.unwrap().unwrap();
    // The upstream stays open but silent; the proxy must end the stream.
    let end = tokio::time::timeout(Duration::from_secs(10), body.next()).await.expect("stream not cut");
    assert!(matches!(end, Some(Err(_)) | None), "{end:?}");
    drop(chunks);
}

#[tokio::test]
async fn oversized_bodies_get_413_with_or_without_content_length() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| c.proxy.max_body_bytes = 1024).await;
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(4096)}]}).to_string();
    let c = client();
    let r = c.post(format!("{}/v1/chat/completions", gw.url)).body(big.clone()).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    // Chunked: no Content-Length to check up front, so the limit applies while reading.
    let chunks = futures_util::stream::iter(
        big.into_bytes().chunks(512).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>(),
    );
    let r = c
        .post(format!("{}/v1/chat/completions", gw.url))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(sim.stats.snapshot().served, 0, "nothing oversized reached the model");
}

#[tokio::test]
async fn a_body_sent_in_pieces_reaches_the_model_whole() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let body = chat_body(false).to_string().into_bytes();
    // Pieces that split keys and values, each its own chunk on the wire.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(7).map(|c| Ok(c.to_vec())).collect();
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reply: Value = r.json().await.unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(sim.stats.snapshot().served, 1);
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_message() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    // A field given twice is refused too: the guard and a model server could
    // each read a different copy, and so score one text and answer another.
    let twice = r#"{"messages": [{"role": "user", "content": "hi"}], "messages": [{"role": "user", "content": "x"}]}"#;
    let prompt_twice = r#"{"prompt": "hi", "prompt": "x"}"#;
    for bad in ["{\"messages\": [", "not json", "[1,2]", "", "\u{feff}{}", twice, prompt_twice] {
        let r = c.post(format!("{}/v1/chat/completions", gw.url)).body(bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_json", "{bad:?}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));
    }
    let r = c.post(format!("{}/v1/chat/completions", gw.url)).body(vec![0xff, 0xfe, 0x7b]).send().await.unwrap();
    assert_eq!(r.status(), 400, "invalid UTF-8");
    assert_eq!(sim.stats.snapshot().served, 0);
}

#[tokio::test]
async fn wrong_method_and_unknown_endpoints_get_json_errors() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    let r = c.get(format!("{}/v1/chat/completions", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "method_not_allowed");
    let r = c.post(format!("{}/v1/audio/speech", gw.url)).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "not_found");
    let r = c.get(format!("{}/nowhere", gw.url)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("<h1>Not Found</h1>"));
}

#[tokio::test]
async fn saturated_upstream_503_reaches_the_client() {
    let sim =
        spawn_sim(SimConfig { capacity: 1, queue: 0, tokens_per_s: 20, ttft: Duration::ZERO, ..SimConfig::default() })
            .await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    let mut long = chat_body(true);
    long["max_tokens"] = json!(1000);
    let first = c.post(format!("{}/v1/chat/completions", gw.url)).json(&long).send().await.unwrap();
    let mut first = first.bytes_stream();
    first.next().await.unwrap().unwrap();
    let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "overloaded");
    // A saturated model is not a broken one: the breaker stays closed.
    assert_eq!(gw.gateway.pool().healthy_count(), 1);
}

#[tokio::test]
async fn client_credentials_stay_here_and_the_upstream_key_is_sent() {
    let mut up = scripted_upstream().await;
    let mut cfg = upstream("scripted", &up.server.url);
    cfg.api_key = Some("upstream-secret".into());
    let gw = spawn_gateway(vec![cfg], |_| {}).await;
    let request = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("authorization", "Bearer client-key")
        .header("cookie", "session=abc")
        .header("x-custom", "kept")
        .json(&chat_body(true))
        .send();
    let (response, chunks) = tokio::join!(request, up.chunks.recv());
    drop(chunks);
    let request_id = response.unwrap().headers()["x-request-id"].clone();
    let seen = up.seen_headers.lock().unwrap()[0].clone();
    assert_eq!(seen["authorization"], "Bearer upstream-secret");
    assert!(seen.get("cookie").is_none());
    assert_eq!(seen["x-custom"], "kept");
    assert_eq!(seen["x-request-id"], request_id);
    assert_eq!(seen["content-type"], "application/json");
}

#[tokio::test]
async fn balances_to_the_least_loaded_upstream() {
    let slow = spawn_sim(SimConfig { ttft: Duration::ZERO, tokens_per_s: 20, ..SimConfig::default() }).await;
    let other = spawn_sim(SimConfig { ttft: Duration::ZERO, tokens_per_s: 20, ..SimConfig::default() }).await;
    // Six streams from one anonymous client are more than admission's fair share
    // for one subnet; this test is about balancing, so admission stays out of it.
    let gw = spawn_gateway(vec![upstream("a", &slow.server.url), upstream("b", &other.server.url)], |c| {
        c.admission.enabled = false;
    })
    .await;
    let c = client();
    let mut streams = Vec::new();
    for _ in 0..6 {
        let mut body = chat_body(true);
        body["max_tokens"] = json!(1000);
        let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&body).send().await.unwrap();
        let mut s = r.bytes_stream();
        s.next().await.unwrap().unwrap();
        streams.push(s);
    }
    assert_eq!(slow.stats.snapshot().in_flight, 3);
    assert_eq!(other.stats.snapshot().in_flight, 3);
}

#[tokio::test]
async fn readiness_follows_upstream_health() {
    let sim = spawn_sim(instant_sim()).await;
    let dead = dead_url().await;
    let healthy = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let r = client().get(format!("{}/readyz", healthy.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let down = spawn_gateway(vec![upstream("dead", &dead)], |c| {
        c.proxy.health_check.interval_ms = 20;
        c.proxy.health_check.unhealthy_after = 1;
    })
    .await;
    let pool = down.gateway.pool().clone();
    eventually(Duration::from_secs(10), "the health check to fail", || pool.healthy_count() == 0).await;
    let r = client().get(format!("{}/readyz", down.url)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["upstreams"]["healthy"], 0);
    let r = client().get(format!("{}/healthz", down.url)).send().await.unwrap();
    assert_eq!(r.status(), 200, "liveness does not depend on upstreams");
}

#[tokio::test]
async fn metrics_count_requests_rejections_and_upstreams() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    for _ in 0..3 {
        c.post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    }
    c.post(format!("{}/v1/chat/completions", gw.url)).body("nope").send().await.unwrap();
    let text = c.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("palisade_requests_total{route=\"chat_completions\",status=\"200\"} 3"), "{text}");
    assert!(text.contains("palisade_requests_total{route=\"chat_completions\",status=\"400\"} 1"));
    assert!(text.contains("palisade_rejections_total{reason=\"invalid_json\"} 1"));
    assert!(text.contains("palisade_upstream_requests_total{upstream=\"sim\"} 3"));
    assert!(text.contains("palisade_upstream_in_flight{upstream=\"sim\"} 0"));
    assert!(text.contains("palisade_upstream_healthy{upstream=\"sim\"} 1"));
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let sim = spawn_sim(SimConfig { ttft: Duration::ZERO, tokens_per_s: 50, ..SimConfig::default() }).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |c| c.server.shutdown_grace_ms = 20_000).await;
    let mut body = chat_body(true);
    body["max_tokens"] = json!(25); // about half a second of streaming
    let response = client().post(format!("{}/v1/chat/completions", gw.url)).json(&body).send().await.unwrap();
    let url = gw.url.clone();
    let drained = tokio::spawn(gw.shutdown());
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "stream cut during drain: {text}");
    drained.await.unwrap();
    assert!(client().get(format!("{url}/healthz")).send().await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn malformed_max_tokens_gets_400_from_palisade() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("sim", &sim.server.url)], |_| {}).await;
    let c = client();
    for field in ["max_tokens", "max_completion_tokens"] {
        for value in [json!("5"), json!(-1), json!(2.5), json!({"n": 5}), json!([5]), json!(true)] {
            let mut body = chat_body(false);
            body.as_object_mut().unwrap().remove("max_tokens");
            body[field] = value.clone();
            let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 400, "{field}: {value}");
            let error: Value = r.json().await.unwrap();
            assert_eq!(error["error"]["code"], "invalid_type", "{field}: {value}: {error}");
            assert_eq!(error["error"]["param"], field, "{error}");
            assert!(error["error"]["message"].as_str().unwrap().contains(field), "{error}");
        }
    }
    // Unset, null and a whole number are fine.
    for value in [json!(null), json!(3)] {
        let mut body = chat_body(false);
        body["max_tokens"] = value;
        let r = c.post(format!("{}/v1/chat/completions", gw.url)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(sim.stats.snapshot().served, 2, "nothing malformed reached the model");
}

#[tokio::test]
async fn a_max_tokens_above_the_whole_budget_gets_400_not_429_forever() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], |c| {
        c.shield.limits.account_tokens = shield::RateConfig::new(1_000, 60_000, 1_000);
    })
    .await;
    let accounts = gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, key) = accounts.create_key(user, "budget", "inference", None, "test").await.unwrap();
    let url = format!("{}/v1/chat/completions", gw.url);
    let mut body = chat_body(false);
    body["max_tokens"] = json!(5_000);
    let r = client().post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("retry-after").is_none());
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "exceeds_token_budget", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("1000") && message.contains("max_tokens"), "{message}");
    // The refusal spent nothing: a request that fits is served at once.
    body["max_tokens"] = json!(5);
    let r = client().post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// What a broken model server might send: a traceback naming internal hosts, a cookie
/// and headers about its own machinery.
const TRACEBACK: &str = "Traceback (most recent call last):\n  File \"/srv/vllm/api.py\", line 42\n\
    ConnectionError: http://10.0.0.5:8000/internal/kv-cache unreachable (token=sk-internal-123)";
const LEAKY_HEADERS: [(&str, &str); 5] = [
    ("content-type", "text/plain"),
    ("set-cookie", "backend=gpu-7; Path=/"),
    ("server", "uvicorn"),
    ("x-internal-host", "gpu-7.cluster.local"),
    ("x-ratelimit-remaining-tokens", "12345"),
];

#[tokio::test]
async fn an_upstream_5xx_body_and_headers_never_reach_the_client() {
    for (upstream_status, client_status, code) in [
        (500, 502, "upstream_error"),
        (502, 502, "upstream_error"),
        (503, 503, "overloaded"),
        (504, 504, "upstream_timeout"),
    ] {
        let up = canned_upstream(upstream_status, &LEAKY_HEADERS, TRACEBACK).await;
        let gw = spawn_gateway(vec![upstream("leaky", &up.server.url)], |_| {}).await;
        let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
        assert_eq!(r.status(), client_status, "upstream {upstream_status}");
        for name in ["set-cookie", "server", "x-internal-host", "x-ratelimit-remaining-tokens"] {
            assert!(r.headers().get(name).is_none(), "upstream {upstream_status}: {name} leaked");
        }
        assert!(r.headers().get("retry-after").is_some(), "upstream {upstream_status}");
        let body = r.text().await.unwrap();
        for secret in ["Traceback", "10.0.0.5", "sk-internal", "vllm"] {
            assert!(!body.contains(secret), "upstream {upstream_status}: {secret} leaked in {body}");
        }
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], code, "upstream {upstream_status}: {error}");
        assert_eq!(up.seen_headers.lock().unwrap().len(), 1, "one attempt: there is one upstream");
    }
}

#[tokio::test]
async fn an_upstream_503_keeps_a_bounded_retry_after() {
    let mut headers = LEAKY_HEADERS.to_vec();
    headers.push(("retry-after", "7"));
    let up = canned_upstream(503, &headers, "busy").await;
    let gw = spawn_gateway(vec![upstream("busy", &up.server.url)], |_| {}).await;
    let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
}

#[tokio::test]
async fn an_upstream_4xx_body_is_the_clients_but_its_headers_are_filtered() {
    let refusal = r#"{"error":{"message":"This model's maximum context length is 4096 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
    let mut headers = LEAKY_HEADERS.to_vec();
    headers[0] = ("content-type", "application/json");
    headers.push(("openai-processing-ms", "12"));
    headers.push(("retry-after", "3"));
    let up = canned_upstream(400, &headers, refusal).await;
    let gw = spawn_gateway(vec![upstream("strict", &up.server.url)], |_| {}).await;
    let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["openai-processing-ms"], "12");
    for name in ["set-cookie", "server", "x-internal-host", "x-ratelimit-remaining-tokens", "retry-after"] {
        assert!(r.headers().get(name).is_none(), "{name} leaked");
    }
    assert_eq!(r.text().await.unwrap(), refusal);
}

#[tokio::test]
async fn only_allowed_upstream_headers_reach_the_client() {
    let mut headers = LEAKY_HEADERS.to_vec();
    headers[0] = ("content-type", "application/json");
    headers.extend([("openai-version", "2020-10-01"), ("openai-processing-ms", "5"), ("cache-control", "no-store")]);
    let up = canned_upstream(200, &headers, r#"{"object":"chat.completion","choices":[]}"#).await;
    let gw = spawn_gateway(vec![upstream("chatty", &up.server.url)], |_| {}).await;
    let r = client().post(format!("{}/v1/chat/completions", gw.url)).json(&chat_body(false)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "cache-control",
            "content-length",
            "content-type",
            "date",
            "openai-processing-ms",
            "openai-version",
            "x-request-id"
        ]
    );
}

#[tokio::test]
async fn palisade_and_forwarding_headers_stay_here_and_the_client_address_is_forwarded() {
    let up = canned_upstream(200, &[("content-type", "application/json")], "{}").await;
    let gw = spawn_gateway(vec![upstream("watcher", &up.server.url)], |_| {}).await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9")
        .header("x-forwarded-host", "evil.example")
        .header("x-palisade-clearance", "clearance-token")
        .header("x-palisade-pass", "pass-token")
        .header("cookie", "palisade_session=abc")
        .header("authorization", "Bearer pal_client")
        .header("x-custom", "kept")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = up.seen_headers.lock().unwrap()[0].clone();
    for name in [
        "x-real-ip",
        "forwarded",
        "x-forwarded-host",
        "x-palisade-clearance",
        "x-palisade-pass",
        "cookie",
        "authorization",
    ] {
        assert!(seen.get(name).is_none(), "{name} reached the upstream: {seen:?}");
    }
    assert_eq!(seen.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.1"], "{seen:?}");
    assert_eq!(seen["x-custom"], "kept");
}

fn from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .user_agent(TEST_AGENT)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn metrics_and_readiness_details_are_only_for_allowed_networks() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway(vec![upstream("secret-gpu-box", &sim.server.url)], |c| {
        c.server.metrics_allow = vec!["127.0.0.1/32".to_owned()];
        c.shield.trusted_proxies = vec!["127.0.0.3/32".to_owned()];
    })
    .await;
    // The operator's own network sees everything.
    let inside = from("127.0.0.1");
    let metrics = inside.get(format!("{}/metrics", gw.url)).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("secret-gpu-box"));
    let ready: Value = inside.get(format!("{}/readyz", gw.url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["upstreams"]["total"], 1, "{ready}");

    // Anyone else: no metrics, and readiness without the details.
    let outside = from("127.0.0.2");
    let metrics = outside.get(format!("{}/metrics", gw.url)).send().await.unwrap();
    assert_eq!(metrics.status(), 404);
    let error: Value = metrics.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    let ready = outside.get(format!("{}/readyz", gw.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap(), json!({"status": "ready"}));

    // Judged on the client a trusted proxy names, not on the proxy.
    let proxy = from("127.0.0.3");
    let forwarded = |path: &str| proxy.get(format!("{}{path}", gw.url)).header("x-forwarded-for", "203.0.113.9").send();
    assert_eq!(forwarded("/metrics").await.unwrap().status(), 404);
    let ready: Value = forwarded("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready, json!({"status": "ready"}));
    let named = proxy.get(format!("{}/metrics", gw.url)).header("x-forwarded-for", "127.0.0.1").send().await.unwrap();
    assert_eq!(named.status(), 200);
}

/// An account's token budget is charged `max_tokens` up front and settled to what the
/// model server reports: a client asking for far more than it gets keeps its budget.
#[tokio::test]
async fn the_token_budget_is_settled_to_the_reported_usage_whole_and_streamed() {
    let sim = spawn_sim(instant_sim()).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], |c| {
        without_route_limits(c);
        // Room for one request's estimate, not two: only settling lets the next one in.
        c.shield.limits.account_tokens = shield::RateConfig::new(150_000, 60_000, 150_000);
    })
    .await;
    let accounts = gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, key) = accounts.create_key(user, "budget", "inference", None, "test").await.unwrap();
    let http = client();
    let url = format!("{}/v1/chat/completions", gw.url);
    // The simulated model stops at 4,096 tokens whatever `max_tokens` says.
    let ask = |stream: bool, options: Option<Value>| {
        let mut body = json!({"model": "palisade-sim", "stream": stream, "max_tokens": 100_000,
                              "messages": [{"role": "user", "content": "hello"}]});
        if let Some(o) = options {
            body["stream_options"] = o;
        }
        http.post(&url).bearer_auth(&key).json(&body).send()
    };
    for round in 0..3 {
        let r = ask(false, None).await.unwrap();
        assert_eq!(r.status(), 200, "whole reply {round}: {}", r.text().await.unwrap());
        let reply: Value = r.json().await.unwrap();
        assert_eq!(reply["usage"]["completion_tokens"], 4096);

        let r = ask(true, None).await.unwrap();
        assert_eq!(r.status(), 200, "stream {round}: {}", r.text().await.unwrap());
        let text = r.text().await.unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"), "{text:.200}");
        assert!(!text.contains("\"usage\":{"), "the client did not ask for usage, so it sees none");
    }
    // A client that asked for usage still gets it.
    let text = ask(true, Some(json!({"include_usage": true}))).await.unwrap().text().await.unwrap();
    assert!(text.contains("\"completion_tokens\":4096"), "{text:.300}");
    let metrics = http.get(format!("{}/metrics", gw.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("palisade_token_budget_settlements_total 7"), "{}", grep(&metrics, "token_budget"));
    // Without settling, the second request would have been refused.
    assert_eq!(ask(false, None).await.unwrap().status(), 200);
}

fn grep(text: &str, what: &str) -> String {
    text.lines().filter(|l| l.contains(what)).collect::<Vec<_>>().join("\n")
}

/// A stream that runs past what was reserved for it (no `max_tokens`, a model that goes
/// on) draws on the budget as it goes and is cut cleanly when the budget is spent.
#[tokio::test]
async fn a_stream_past_its_budget_is_cut_with_a_last_event_saying_why() {
    let sim = spawn_sim(SimConfig { default_max_tokens: 3_000, ..instant_sim() }).await;
    let gw = spawn_gateway_on(None, vec![upstream("sim", &sim.server.url)], |c| {
        without_route_limits(c);
        c.shield.limits.account_tokens = shield::RateConfig::new(1_000, 3_600_000, 1_000);
    })
    .await;
    let accounts = gw.gateway.accounts();
    let user = accounts.service_user().await.unwrap();
    let (_, key) = accounts.create_key(user, "long", "inference", None, "test").await.unwrap();
    let body = json!({"model": "palisade-sim", "stream": true, "messages": [{"role": "user", "content": "go on"}]});
    let r =
        client().post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(&key).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let content = events.iter().filter(|e| e.contains("\"content\":\"") && !e.contains("\"content\":\"\"")).count();
    println!("a 3,000-token reply on a 1,000-token budget: cut after {content} tokens");
    assert!(text.ends_with("data: [DONE]\n\n"), "{}", &text[text.len().saturating_sub(300)..]);
    let last = events[events.len() - 2];
    assert!(last.contains("token_budget_exhausted"), "{last}");
    assert!((600..=1_000).contains(&content), "{content} tokens streamed");
    // The budget is spent: the next request waits.
    let again = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 429);
}
