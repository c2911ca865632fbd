//! `palisade pow solve`: the JSON challenge flow from the command line, for API clients
//! and operators testing their own gateway.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::cli::PowCommand;
use crate::config::Config;
use crate::serve::runtime;

pub fn run(action: PowCommand) -> anyhow::Result<ExitCode> {
    let PowCommand::Solve { config, url, user_agent } = action;
    let base = match url {
        Some(url) => url,
        None => format!("http://{}", Config::load(config.config.as_deref(), std::env::vars())?.listen),
    };
    let base = base.trim_end_matches('/').to_owned();
    let rt = runtime()?;
    let (status, challenge) = rt.block_on(request(&base, "GET", "/challenge", &user_agent, None))?;
    if status != 200 {
        bail!("GET /challenge answered {status}: {}", message(&challenge));
    }
    let (Some(token), Some(seed), Some(difficulty)) =
        (challenge["token"].as_str(), challenge["seed"].as_str(), challenge["difficulty"].as_u64())
    else {
        bail!("GET /challenge did not answer a challenge: {challenge}");
    };
    let difficulty = u8::try_from(difficulty).context("difficulty out of range")?;
    let started = Instant::now();
    let nonce = solve_parallel(seed, difficulty).context("no nonce solves this challenge")?;
    eprintln!("solved difficulty {difficulty} in {:.2?}", started.elapsed());
    let body = json!({"token": token, "nonce": nonce.to_string()});
    let (status, answer) = rt.block_on(request(&base, "POST", "/challenge", &user_agent, Some(body)))?;
    if status != 200 {
        bail!("POST /challenge answered {status}: {}", message(&answer));
    }
    let clearance = answer["clearance"].as_str().context("no clearance in the answer")?;
    println!("{clearance}");
    eprintln!(
        "send it as `X-Palisade-Clearance: <token>` (or the {} cookie) with `User-Agent: {user_agent}`, from this \
         network; good for {} requests within {} s",
        answer["cookie"].as_str().unwrap_or("palisade_clearance"),
        answer["budget"],
        answer["expires_in_s"],
    );
    Ok(ExitCode::SUCCESS)
}

fn message(answer: &Value) -> String {
    answer["error"]["message"].as_str().map_or_else(|| answer.to_string(), str::to_owned)
}

/// [`shield::pow::solve_range`] on every core, in interleaved chunks.
fn solve_parallel(seed: &str, difficulty: u8) -> Option<u64> {
    const CHUNK: u64 = 1 << 16;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let next = AtomicU64::new(0);
    let found = AtomicBool::new(false);
    let best = AtomicU64::new(u64::MAX);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while !found.load(Ordering::Relaxed) {
                    let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if let Some(n) = shield::pow::solve_range(seed, difficulty, start, CHUNK) {
                        best.fetch_min(n, Ordering::Relaxed);
                        found.store(true, Ordering::Relaxed);
                    }
                    if start > u64::MAX - 2 * CHUNK {
                        return;
                    }
                }
            });
        }
    });
    let n = best.load(Ordering::Relaxed);
    (n != u64::MAX).then_some(n)
}

async fn request(
    base: &str,
    method: &str,
    path: &str,
    agent: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("{base}{path}").parse().context("bad --url")?;
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::USER_AGENT, agent)
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .context("the gateway did not answer within 10s")?
        .with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Ok((status, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parallel_solver_finds_a_valid_nonce() {
        let seed = "000102030405060708090a0b0c0d0e0f";
        let n = solve_parallel(seed, 12).unwrap();
        assert!(shield::pow::leading_zero_bits(&shield::pow::work_hash(seed, n)) >= 12);
    }

    #[test]
    fn ttls_read_like_people_write_them() {
        use crate::cli::parse_ttl;
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("1w").is_err() && parse_ttl("h").is_err() && parse_ttl("0").is_err());
    }
}
