//! `palisade drill` as an operator runs it: a small scenario against Palisade and both
//! baselines, then the report, the JSON and the charts it leaves behind.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drill-tiny.toml");

fn nginx_available() -> bool {
    ["/usr/sbin/nginx", "/usr/bin/nginx"].iter().any(|p| Path::new(p).exists())
}

fn run_for(summaries: &Value, class: &str, phase: &str) -> Value {
    summaries
        .as_array()
        .and_then(|a| a.iter().find(|s| s["class"] == class && s["phase"] == phase).cloned())
        .unwrap_or_else(|| panic!("no summary for {class} in {phase}: {summaries}"))
}

#[test]
fn a_drill_reports_every_class_the_defences_and_the_baselines_side_by_side() {
    if !nginx_available() {
        // The drill would apt-get it; a developer's machine may not allow that.
        assert!(std::env::var("CI").is_err(), "CI must install nginx (see .ci/run)");
        eprintln!("SKIPPED: nginx is not installed (apt-get install -y nginx-light)");
        return;
    }
    let dir = scratch_dir();
    let out = dir.path().join("report");
    let output = Command::new(BIN)
        .args(["drill", TINY, "--baselines", "all", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .expect("run palisade drill");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "drill failed:\n{stdout}\n{stderr}");

    // What the operator reads.
    for heading in ["## palisade", "## palisade, defences off", "## nginx limit_req + limit_conn", "## Targets"] {
        assert!(stdout.contains(heading), "{heading} missing from:\n{stdout}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("| logged-in users | attack |"), "{md}");

    // The pictures, one per target.
    for name in ["chart", "chart-defences-off", "chart-nginx"] {
        let png = std::fs::read(out.join(format!("{name}.png"))).expect("png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}.png is not a PNG");
        let svg = std::fs::read_to_string(out.join(format!("{name}.svg"))).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("logged-in users") && svg.contains("attack"), "{name}.svg");
    }
    assert!(!out.join("work").exists(), "the drill's scratch data is cleaned up");

    // The machine-readable report.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("json"))
        .expect("report.json parses");
    let runs = report["runs"].as_array().expect("runs");
    let targets: Vec<&str> = runs.iter().filter_map(|r| r["target"].as_str()).collect();
    assert_eq!(targets, ["palisade", "defences-off", "nginx"]);
    let palisade = &runs[0];
    let s = &palisade["summaries"];
    // Members were registered, verified and logged in, and chatted in quiet times.
    let quiet = run_for(s, "logged-in users", "quiet");
    assert!(quiet["requests"].as_u64() > Some(0) && quiet["success_pct"] == 100.0, "{quiet}");
    // Newcomers got through: sign-up, code, login, first answer.
    assert!(run_for(s, "newcomers", "all")["ok"].as_u64() > Some(0), "{s}");
    // Bots from a scripting client are challenged, made-up keys refused, and none of it
    // reaches the model.
    assert_eq!(run_for(s, "sign-up flood", "attack")["ok"], 0);
    assert_eq!(run_for(s, "inference flood", "attack")["ok"], 0);
    let defences = palisade["defences"].as_array().expect("defences");
    let has = |action: &str, reason: &str| defences.iter().any(|d| d["action"] == action && d["reason"] == reason);
    assert!(has("challenged", "no_clearance"), "{defences:?}");
    assert!(has("refused with code", "invalid_api_key"), "{defences:?}");
    assert_eq!(palisade["bot_capacity_pct"], 0.0);
    let upstream = palisade["upstream"].as_array().expect("model usage");
    assert!(upstream.iter().any(|u| u["user"] == "drill-members" && u["requests"].as_u64() > Some(0)), "{upstream:?}");

    // Baselines have no edge: the scripting client's sign-ups are not challenged there.
    let off = &runs[1]["summaries"];
    let off_signup = run_for(off, "sign-up flood", "attack");
    assert!(off_signup["denied"].as_u64() < run_for(s, "sign-up flood", "attack")["denied"].as_u64(), "{off_signup}");
    let comparison = report["comparison"].as_array().expect("comparison");
    assert_eq!(comparison.len(), 3);
    assert!(comparison.iter().all(|c| c["member_goodput"].as_f64().is_some()));
    assert_eq!(report["verdicts"].as_array().map(Vec::len), Some(4), "{}", report["verdicts"]);

    // Nothing the drill started outlives it: not the gateways, not nginx's master nor
    // its workers (whose command line says only "nginx: worker process", so they are
    // found by the files they hold open under the drill's directory).
    let left = processes_touching(&out);
    assert!(left.is_empty(), "processes left behind by the drill: {left:#?}");
}

const FLEET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drill-fleet.toml");

#[test]
fn a_drill_on_three_nodes_reports_each_node_the_fleet_and_the_cross_node_limit_accuracy() {
    // The nodes share a Redis and a PostgreSQL server, found or started as every
    // fleet test does: a skip without them locally, a failure under CI=true.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let Some(redis) = testkit::redis::shared_redis() else { return };
    let Some(db) = rt.block_on(testkit::postgres::fresh_postgres()) else { return };
    let dir = scratch_dir();
    let out = dir.path().join("report");
    // The fixture says 2 nodes: the flag wins.
    let output = Command::new(BIN)
        .args(["drill", FLEET, "--nodes", "3", "--baselines", "none"])
        .args(["--shared-state", &redis.url, "--database-url", &db.url, "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .output()
        .expect("run palisade drill");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "drill failed:\n{stdout}\n{stderr}");
    for text in ["### 3 nodes", "| **fleet** |", "Cross-node limit accuracy: a key limited to 30"] {
        assert!(stdout.contains(text), "{text} missing from:\n{stdout}");
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("json"))
        .expect("report.json parses");
    let fleet = &report["runs"][0]["fleet"];
    let nodes = fleet["nodes"].as_array().expect("per-node figures");
    assert_eq!(nodes.len(), 3, "{fleet}");
    let n = |row: &Value, field: &str| row[field].as_u64().unwrap_or_else(|| panic!("{field} in {row}"));
    for node in nodes {
        // Every node got traffic, answered it, and kept its limits in the shared state.
        assert!(n(node, "requests") > 0 && n(node, "ok") > 0, "{node}");
        assert!(n(node, "answered") > 0 && n(node, "shared_state_calls") > 0, "{node}");
        assert_eq!(n(node, "shared_state_fallbacks"), 0, "Redis answered throughout: {node}");
    }
    for field in ["requests", "ok", "refused", "answered"] {
        let sum: u64 = nodes.iter().map(|r| n(r, field)).sum();
        assert_eq!(n(&fleet["fleet"], field), sum, "the fleet's {field} is the nodes' sum");
    }
    let accuracy = &fleet["limit_accuracy"];
    let ratio = accuracy["ratio"].as_f64().unwrap_or_else(|| panic!("measured: {fleet}"));
    println!("cross-node limit accuracy over 3 nodes: {accuracy}");
    assert!(ratio <= 1.05, "{accuracy}");
    // The whole burst got through, from every node, and nothing but 200 and 429 came back.
    assert!(n(accuracy, "admitted") >= 30 && n(accuracy, "other") == 0, "{accuracy}");
    assert!(accuracy["admitted_per_node"].as_array().is_some_and(|a| a.iter().all(|x| x.as_u64() > Some(0))));
    let verdicts = report["verdicts"].as_array().expect("verdicts");
    assert!(verdicts.iter().any(|v| v["target"].as_str().is_some_and(|t| t.contains("3 nodes")) && v["pass"] == true));

    assert!(!out.join("work").exists(), "the drill's scratch data is cleaned up");
    let left = processes_touching(&out);
    assert!(left.is_empty(), "processes left behind by the drill: {left:#?}");
}

#[test]
fn nodes_need_shared_state_that_answers() {
    let dir = scratch_dir();
    // Nothing listens on port 1.
    let (ok, _, stderr) = run(
        dir.path(),
        &["drill", FLEET, "--nodes", "2", "--baselines", "none", "--shared-state", "redis://127.0.0.1:1"],
    );
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("redis://127.0.0.1:1") && stderr.contains("--shared-state"), "{stderr}");
    let (ok, _, stderr) = run(dir.path(), &["drill", FLEET, "--target", "http://127.0.0.1:9", "--outbox", "x"]);
    assert!(!ok && stderr.contains("--nodes"), "{stderr}");
}

/// Every process other than this one whose command line, working directory or open
/// files name a path under `dir`, as `(pid, command line)`.
fn processes_touching(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let proc_dir = entry.path();
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let mut paths: Vec<String> = vec![cmdline.clone()];
        paths.extend(std::fs::read_link(proc_dir.join("cwd")).ok().map(|p| p.to_string_lossy().into_owned()));
        if let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) {
            paths.extend(
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .map(|p| p.to_string_lossy().into_owned()),
            );
        }
        // A zombie has nothing open and no command line; it is already gone.
        if paths.iter().any(|p| p.contains(&needle)) {
            found.push((pid, cmdline));
        }
    }
    found
}

#[test]
fn a_bad_scenario_names_its_field_and_the_defaults_can_be_shown() {
    let dir = scratch_dir();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[phase]]\nname = \"attack\"\nseconds = -1\n[members]\nchat_rate = 3\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["drill", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("chat_rate"), "{stderr}");
    std::fs::write(&bad, "[[phase]]\nname = \"attack\"\nseconds = -1\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["drill", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("phase[0].seconds"), "{stderr}");

    let (ok, shown, stderr) = run(dir.path(), &["drill", "flash-crowd", "--show"]);
    assert!(ok, "{stderr}");
    let scenario: toml::Value = toml::from_str(&shown).expect("--show prints TOML");
    assert_eq!(scenario["newcomers"]["count"].as_integer(), Some(300));
    assert_eq!(scenario["targets"]["newcomers_admitted_pct"].as_float(), Some(95.0));
    let (ok, _, stderr) = run(dir.path(), &["drill", "attack", "--target", "http://192.0.2.1:80", "--outbox", "x"]);
    assert!(!ok && stderr.contains("loopback"), "{stderr}");
}
