//! The priority-admission proof (see bench/admission.sh, which builds and runs
//! this): a simulated model of capacity C, logged-in users chatting at 0.5× C
//! from their own addresses, and an anonymous flood at 20× C from hundreds of
//! addresses on 127.0.0.0/8. Each mode (admission on, then off) runs a quiet
//! phase (users alone) and a flood phase, against a fresh `palisade serve`.
//!
//! Usage: priority_flood PALISADE_BINARY [OUT.json]
//! Knobs (environment): CAPACITY [8], QUIET_S [10], FLOOD_S [15], MEMBERS [20],
//! BOTS [400] source addresses, MODES ["on off"].

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drill::load::{self, Summary, Traffic};
use drill::traffic::{Browser, Identifier, Outbox, Solver};
use serde_json::json;

const TTFT_MS: u64 = 100;
const TOKENS_PER_S: u32 = 100;
const MAX_TOKENS: u32 = 10;
const PASSWORD: &str = "Flood-proof member pass 2026!";

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A child process killed when dropped, so nothing outlives the run.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(url: &str) {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not become ready within 30 s");
}

/// Register, verify (reading the code from the outbox, as the operator's SMS
/// provider would deliver it) and log in one user; returns the session cookie.
async fn member(base: &str, outbox: &Outbox, i: usize, source: IpAddr) -> String {
    let browser = Browser::new(source, base, Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(60);
    let who = Identifier::Email(format!("member{i}@example.test"));
    browser.sign_up(&Solver::new(1), outbox, &who, PASSWORD, deadline, None).await.unwrap_or_else(|e| panic!("{e}")).1
}

fn chat_body() -> Bytes {
    Bytes::from(
        json!({"model": "palisade-sim", "max_tokens": MAX_TOKENS,
               "messages": [{"role": "user", "content": "What is a good name for a cat?"}]})
        .to_string(),
    )
}

struct Phase {
    name: &'static str,
    members: Summary,
    flood: Option<Summary>,
}

async fn run_mode(bin: &Path, admission: bool, capacity: u64) -> Vec<Phase> {
    let quiet = Duration::from_secs(knob("QUIET_S", 10));
    let flood_for = Duration::from_secs(knob("FLOOD_S", 15));
    let members = knob("MEMBERS", 20) as usize;
    let bots = knob("BOTS", 400) as usize;
    let sim_port = free_port();
    let port = free_port();
    let data = std::env::temp_dir().join(format!("palisade-flood-{}-{admission}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let _sim = Proc(
        Command::new(bin)
            .args(["sim-upstream", "--listen", &format!("127.0.0.1:{sim_port}")])
            .args(["--capacity", &capacity.to_string(), "--queue", "1024", "--queue-timeout-ms", "30000"])
            .args(["--ttft-ms", &TTFT_MS.to_string(), "--tokens-per-s", &TOKENS_PER_S.to_string()])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulated model"),
    );
    let _gateway = Proc(
        Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
            .env("PALISADE_UPSTREAMS", format!("[{{name=\"sim\", url=\"http://127.0.0.1:{sim_port}\"}}]"))
            .env("PALISADE_DATA_DIR", &data)
            .env("PALISADE_LOG__LEVEL", "warn")
            .env("PALISADE_AUTH__ALLOW_ANONYMOUS_INFERENCE", "true")
            .env("PALISADE_ADMISSION__ENABLED", admission.to_string())
            .env("PALISADE_ADMISSION__LIMIT__INITIAL", (2 * capacity).to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start palisade"),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("http://127.0.0.1:{sim_port}/v1/models")).await;
    wait_ready(&format!("{base}/readyz")).await;

    let outbox = Outbox::new(vec![data.join("outbox.jsonl")]);
    let mut member_clients = Vec::new();
    let mut cookies = Vec::new();
    for i in 0..members {
        // One /24 per user, as real users have: sign-up limits are per subnet.
        let source = IpAddr::V4(Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 1));
        cookies.push(Some(("cookie".to_owned(), member(&base, &outbox, i, source).await)));
        member_clients.push(load::client_from(Some(source), Duration::from_secs(60)));
    }
    let service_s = (TTFT_MS as f64 + 1000.0 * (MAX_TOKENS - 1) as f64 / TOKENS_PER_S as f64) / 1000.0;
    let capacity_rps = capacity as f64 / service_s;
    let url = format!("{base}/v1/chat/completions");
    let users = Arc::new(Traffic {
        name: "logged-in users".into(),
        rate: 0.5 * capacity_rps,
        clients: member_clients,
        credentials: cookies,
        url: url.clone(),
        body: chat_body(),
        max_in_flight: 4096,
        timeout: Duration::from_secs(60),
    });
    let flood = Arc::new(Traffic {
        name: "anonymous flood".into(),
        rate: 20.0 * capacity_rps,
        clients: (0..bots)
            .map(|i| {
                let source = IpAddr::V4(Ipv4Addr::new(127, 2, (i / 250) as u8, (i % 250 + 1) as u8));
                load::client_from(Some(source), Duration::from_secs(60))
            })
            .collect(),
        credentials: vec![None; bots],
        url,
        body: chat_body(),
        max_in_flight: 4096,
        timeout: Duration::from_secs(60),
    });

    let epoch = Instant::now();
    eprintln!("admission {}: quiet phase {quiet:?} (users alone)", if admission { "on" } else { "off" });
    let (samples, dropped) = load::run(users.clone(), quiet, epoch).await;
    let quiet_phase =
        Phase { name: "quiet", members: load::summarize(&users.name, &samples, dropped, quiet), flood: None };
    eprintln!("admission {}: flood phase {flood_for:?}", if admission { "on" } else { "off" });
    let (user_run, flood_run) =
        tokio::join!(load::run(users.clone(), flood_for, epoch), load::run(flood.clone(), flood_for, epoch));
    let flood_phase = Phase {
        name: "flood",
        members: load::summarize(&users.name, &user_run.0, user_run.1, flood_for),
        flood: Some(load::summarize(&flood.name, &flood_run.0, flood_run.1, flood_for)),
    };
    let _ = std::fs::remove_dir_all(&data);
    vec![quiet_phase, flood_phase]
}

fn row(mode: &str, phase: &str, s: &Summary) -> String {
    format!(
        "| {mode} | {phase} | {} | {} | {:.2}% | {:.0} | {:.0} | {:.1} | {} | {} |",
        s.name,
        s.scheduled,
        s.success_pct,
        s.p50_ms,
        s.p99_ms,
        s.goodput,
        s.refused,
        s.errors + s.dropped
    )
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = PathBuf::from(args.next().expect("usage: priority_flood PALISADE_BINARY [OUT.json]"));
    let out = args.next();
    let capacity = knob("CAPACITY", 8);
    let modes = std::env::var("MODES").unwrap_or_else(|_| "on off".into());
    let mut lines = vec![
        "| admission | phase | traffic | requests | success | p50 ms | p99 ms | goodput req/s | refused (429/503) | other (403, errors, not sent) |"
            .to_owned(),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|".to_owned(),
    ];
    let mut json_out = Vec::new();
    let mut verdicts = Vec::new();
    for mode in modes.split_whitespace() {
        let on = mode == "on";
        let phases = run_mode(&bin, on, capacity).await;
        for phase in &phases {
            lines.push(row(mode, phase.name, &phase.members));
            if let Some(flood) = &phase.flood {
                lines.push(row(mode, phase.name, flood));
            }
            json_out
                .push(json!({"admission": mode, "phase": phase.name, "members": phase.members, "flood": phase.flood}));
        }
        let (quiet, flood) = (&phases[0].members, &phases[1].members);
        let ratio = flood.p99_ms / quiet.p99_ms.max(1e-9);
        let pass = flood.success_pct >= 99.0 && ratio <= 2.0;
        verdicts.push(format!(
            "admission {mode}: logged-in users kept {:.2}% success (target ≥ 99%), p99 {:.0} ms under flood vs {:.0} ms \
             quiet = {ratio:.2}× (target ≤ 2×): {}",
            flood.success_pct,
            flood.p99_ms,
            quiet.p99_ms,
            if pass { "PASS" } else { "FAIL" }
        ));
    }
    let service_ms = TTFT_MS as f64 + 1000.0 * (MAX_TOKENS - 1) as f64 / TOKENS_PER_S as f64;
    println!(
        "Simulated model: capacity C = {capacity} concurrent, ~{service_ms:.0} ms per reply ({:.0} req/s); users at 0.5×, \
         flood at 20× that rate\n",
        capacity as f64 * 1000.0 / service_ms
    );
    println!("{}\n", lines.join("\n"));
    for v in &verdicts {
        println!("{v}");
    }
    if let Some(out) = out {
        let _ = std::fs::write(out, serde_json::to_string_pretty(&json_out).unwrap_or_default());
    }
}
