//! `docs/runbook.md` cannot rot: every command in its `sh` blocks runs, in order,
//! against a live gateway, and what the playbooks promise users is checked from a
//! user's side at the points it should hold.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The commands of the runbook's `sh` blocks, with the heading they sit under.
fn commands(runbook: &str) -> Vec<(String, String)> {
    let (mut out, mut heading, mut in_sh) = (Vec::new(), String::new(), false);
    for line in runbook.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            heading = h.to_owned();
        } else if line.trim() == "```sh" {
            in_sh = true;
        } else if line.trim() == "```" {
            in_sh = false;
        } else if in_sh && !line.trim().is_empty() && !line.trim_start().starts_with('#') {
            out.push((heading.clone(), line.trim().to_owned()));
        }
    }
    out
}

/// Split a command line as a shell would for the quoting the runbook uses.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => (quote, any) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (_, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    assert!(quote.is_none(), "unclosed quote in `{line}`");
    if any {
        out.push(word);
    }
    out
}

#[tokio::test]
async fn every_playbook_command_runs_against_a_live_gateway() {
    let runbook = std::fs::read_to_string(workspace_root().join("docs/runbook.md")).unwrap();
    let commands = commands(&runbook);
    assert!(commands.len() >= 20, "the runbook lost its commands: {commands:?}");
    let dir = scratch_dir();
    let palisade = Running::start(dir.path(), &["serve", "--listen", "127.0.0.1:0"], &[]);
    let c = http();
    let mut incident: Option<i64> = None;
    for (heading, line) in &commands {
        let mut args = words(line);
        assert_eq!(args.remove(0), "palisade", "{heading}: `{line}` is not a palisade command");
        if args[0] == "admin" {
            args.insert(1, "--url".into());
            args.insert(2, palisade.admin_url.clone());
        }
        for arg in &mut args {
            if arg == "$INCIDENT" {
                *arg = incident.expect("an incident was opened before it is used").to_string();
            }
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out, err) = run(dir.path(), &argv);
        assert!(ok, "{heading}: `{line}` failed:\n{out}\n{err}");
        if line.contains("incident open") {
            let opened: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
            incident = Some(opened["id"].as_i64().unwrap_or_else(|| panic!("no id in {out}")));
        }

        // What the playbooks say users see, right after the command that causes it.
        if line.starts_with("palisade admin registration regions CN") {
            // Visitors are told why, in the operator's words, on the status page too.
            status_page_says(&c, &palisade.url, "limited to +86 numbers").await;
        }
        if line.starts_with("palisade admin incident open --name \"Web/API degraded performance\"") {
            status_page_says(&c, &palisade.url, "Web/API degraded performance").await;
        }
        if line.starts_with("palisade admin block add 198.51.100.0/24") {
            // A client behind that network is refused; everyone else is not.
            let r = c.get(format!("{}/v1/models", palisade.url)).send().await.unwrap();
            assert_eq!(r.status(), 401, "loopback is not in the blocked network");
        }
    }
    // The playbooks left the switches as they found them.
    let (ok, out, err) = run(dir.path(), &["admin", "--url", &palisade.admin_url, "registration", "show"]);
    assert!(ok && out.contains("\"open\""), "{out}{err}");
    let (ok, out, err) = run(dir.path(), &["admin", "--url", &palisade.admin_url, "attack", "show"]);
    assert!(ok && out.contains("\"switch\": \"auto\""), "{out}{err}");
    assert!(dir.path().join("audit.jsonl").exists());
    drop(palisade);
}

/// The status page says `needle` within a few seconds (it is re-rendered on a tick).
async fn status_page_says(c: &reqwest::Client, url: &str, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = c.get(format!("{url}/status")).send().await.unwrap().text().await.unwrap();
        if page.contains(needle) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the status page never said {needle:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn commands_are_split_as_a_shell_would() {
    assert_eq!(
        words(r#"palisade admin incident open --name "Web/API degraded" --impact minor"#),
        ["palisade", "admin", "incident", "open", "--name", "Web/API degraded", "--impact", "minor"]
    );
    assert_eq!(words("a '' b"), ["a", "", "b"]);
}
