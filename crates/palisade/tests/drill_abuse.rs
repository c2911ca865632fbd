//! `palisade drill` with the abuse scenarios in small form: an account farm and SMS
//! pumping, each against Palisade and the defences-off baseline. What is asserted is
//! what an operator reads (the sections, the figures in report.json and that they are
//! plausible), not the shipped scenarios' targets, which need their full size and a
//! machine of their own to be judged.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use common::*;
use serde_json::Value;

const FARM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drill-farm-tiny.toml");
const SMS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/drill-sms-tiny.toml");

/// One drill at a time: each starts gateways and a model, and two at once on a small
/// machine would measure each other.
static ONE_DRILL: Mutex<()> = Mutex::new(());

/// Runs `palisade drill SCENARIO --baselines off` into `out`: its output, stdout, and
/// report.json. A missed target is exit status 1 and still a report; anything else is
/// a failure.
fn drill(scenario: &str, dir: &Path, out: &Path) -> (Output, String, Value) {
    let _one = ONE_DRILL.lock().unwrap_or_else(|e| e.into_inner());
    let output = Command::new(BIN)
        .args(["drill", scenario, "--baselines", "off", "--out"])
        .arg(out)
        .current_dir(dir)
        .output()
        .expect("run palisade drill");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let json = std::fs::read_to_string(out.join("report.json"))
        .unwrap_or_else(|e| panic!("no report.json ({e}); the drill said:\n{stdout}\n{stderr}"));
    assert!(matches!(output.status.code(), Some(0 | 1)), "{:?}:\n{stdout}\n{stderr}", output.status);
    let report: Value = serde_json::from_str(&json).expect("report.json parses");
    (output, stdout, report)
}

fn number(v: &Value, what: &str) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

fn verdict<'a>(report: &'a Value, about: &str) -> &'a Value {
    report["verdicts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["target"].as_str().is_some_and(|t| t.contains(about))))
        .unwrap_or_else(|| panic!("no verdict about {about:?}: {}", report["verdicts"]))
}

#[test]
fn an_account_farm_is_reported_with_its_share_of_the_model_against_the_members() {
    let dir = scratch_dir();
    let out = dir.path().join("report");
    let (_, stdout, report) = drill(FARM, dir.path(), &out);
    for text in ["### The account farm", "## The account farm, side by side", "the farm **", "## Targets"] {
        assert!(stdout.contains(text), "{text} missing from:\n{stdout}");
    }
    let runs = report["runs"].as_array().expect("runs");
    let targets: Vec<&str> = runs.iter().filter_map(|r| r["target"].as_str()).collect();
    assert_eq!(targets, ["palisade", "defences-off"]);
    for run in runs {
        let farm = &run["farm"];
        // The farm signed up through the public flow and kept the model busy.
        let signed_up = farm["setup"]["signed_up"].as_u64().unwrap_or(0);
        assert!(signed_up > 0 && farm["setup"]["accounts"] == 30, "{farm}");
        assert!(farm["requests"].as_u64() > Some(0) && farm["in_flight_per_account"] == 2, "{farm}");
        let share = number(&farm["farm_capacity_pct"], "the farm's share");
        let members = number(&farm["member_capacity_pct"], "the members' share");
        let newcomers = number(&farm["newcomer_capacity_pct"], "the newcomers' share");
        assert!(share >= 0.0 && members > 0.0, "{farm}");
        if run["target"] == "defences-off" {
            assert!(share > 0.0, "with nothing in its way the farm gets the model: {farm}");
        }
        // Shares of one capacity (sampled once a second, so a little over 100 at most).
        assert!(share + members + newcomers <= 110.0, "{farm}");
        assert!((number(&farm["farm_allowed_pct"], "the allowance") - (100.0 - members + 100.0)).abs() < 1e-6);
        // The farm is not counted among "bots": it has its own figure.
        assert!(run["bot_capacity_pct"].is_null(), "{run}");
    }
    let v = verdict(&report, "account farm's share");
    assert!(v["pass"].is_boolean() && v["measured"].as_str().is_some_and(|m| m.contains("members")), "{v}");
    let success = report["comparison"][0]["member_success_pct"].as_f64();
    assert!(success.is_some_and(|s| (0.0..=100.0).contains(&s)), "{}", report["comparison"]);
    assert!(report["comparison"][0]["farm_capacity_pct"].is_number());
    assert!(!out.join("work").exists(), "the drill's scratch data is cleaned up");
}

#[test]
fn sms_pumping_is_reported_with_texts_to_bots_per_genuine_sign_up_against_defences_off() {
    let dir = scratch_dir();
    let out = dir.path().join("report");
    let (_, stdout, report) = drill(SMS, dir.path(), &out);
    for text in ["### SMS pumping", "## SMS pumping, side by side", "Texts by country", "## Targets"] {
        assert!(stdout.contains(text), "{text} missing from:\n{stdout}");
    }
    let runs = report["runs"].as_array().expect("runs");
    let sms = |i: usize| &runs[i]["sms"];
    let (on, off) = (sms(0), sms(1));
    assert_eq!(runs[1]["target"], "defences-off");
    let texts = |s: &Value| s["bot_texts"].as_u64().unwrap_or_else(|| panic!("bot_texts in {s}"));
    // With the breaker off, every sign-up the bots sent was texted; with it on, far fewer.
    assert!(texts(off) > texts(on), "off {off}\non {on}");
    assert!(off["bot_sign_ups"].as_u64() > Some(0) && texts(off) > 0, "{off}");
    for s in [on, off] {
        // The gateway counted at least the texts the bots saw answered 201, all to the
        // bots' countries.
        let metered = s["bot_country_texts"].as_u64().unwrap_or_else(|| panic!("metered texts in {s}"));
        assert!(metered >= texts(s), "{s}");
        let countries = s["countries"].as_array().expect("countries");
        let of = |owner: &str| countries.iter().filter(|c| c["numbers_of"] == owner).count();
        assert!(of("other") == 0 && of("both") == 0, "{countries:?}");
        // Newcomers signed up by phone; how many got their code is a percentage.
        let started = s["newcomers"]["started"].as_u64().unwrap_or(0);
        assert!(started > 0 && s["newcomers"]["got_code"].as_u64() <= Some(started), "{s}");
        assert!((0.0..=100.0).contains(&number(&s["newcomer_codes_pct"], "newcomers' codes")), "{s}");
    }
    assert!(off["countries"].as_array().is_some_and(|c| c.iter().any(|c| c["numbers_of"] == "bots")));
    assert!(report["comparison"].as_array().is_some_and(|c| c.iter().all(|c| c["bot_texts"].is_u64())));
    for about in ["texts to bots per genuine sign-up", "newcomers whose verification code was sent"] {
        assert!(verdict(&report, about)["pass"].is_boolean());
    }
    // Texts to bots per genuine sign-up fell: a reduction is a percentage when both runs
    // had a genuine sign-up.
    if on["bot_texts_per_sign_up"].is_number() && off["bot_texts_per_sign_up"].is_number() {
        let reduction = number(&report["sms_reduction_pct"], "the reduction");
        assert!(reduction > 0.0 && reduction <= 100.0, "{reduction}");
        assert!(stdout.contains("fewer texts per genuine sign-up than with them off"), "{stdout}");
    }
    assert!(!out.join("work").exists(), "the drill's scratch data is cleaned up");
}
