//! One-time things stay spent across a restart: a redeemed proof of work, a spent
//! clearance and a used waiting-room pass are refused by the restarted gateway, which
//! keeps the same signing key (its file in the data directory).

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const AGENT: &str = "curl/8.5.0";

fn scripted() -> reqwest::Client {
    reqwest::Client::builder().user_agent(AGENT).timeout(Duration::from_secs(20)).build().unwrap()
}

fn settings<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("PALISADE_SHIELD__POW__BASE_DIFFICULTY", "4"),
        ("PALISADE_SHIELD__POW__CLEARANCE_BUDGET", "1"),
        // One sign-up an hour per network, then the waiting room (which admits at once).
        (
            "PALISADE_SHIELD__LIMITS__ROUTES",
            r#"[{route="register", per="subnet", rate={count=1, period_ms=3600000, burst=1}}]"#,
        ),
        ("PALISADE_SHIELD__WAITING_ROOM__ADMIT_PER_SEC", "50"),
    ]
}

async fn post(c: &reqwest::Client, url: String, body: &Value, header: Option<(&str, &str)>) -> (u16, Value) {
    let mut r = c.post(url).json(body);
    if let Some((name, value)) = header {
        r = r.header(name, value);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn what_was_redeemed_spent_or_used_stays_so_after_a_restart() {
    let dir = scratch_dir();
    let args = ["serve", "--listen", "127.0.0.1:0"];
    let mut first = Running::start(dir.path(), &args, &settings());
    let url = first.url.clone();
    let c = scripted();

    // A solved challenge, redeemed once for a clearance with a budget of one request.
    let challenge: Value = c.get(format!("{url}/challenge")).send().await.unwrap().json().await.unwrap();
    let nonce = shield::solve(challenge["seed"].as_str().unwrap(), challenge["difficulty"].as_u64().unwrap() as u8)
        .unwrap()
        .to_string();
    let answer = json!({"token": challenge["token"], "nonce": nonce});
    let (status, cleared) = post(&c, format!("{url}/challenge"), &answer, None).await;
    assert_eq!(status, 200, "{cleared}");
    let clearance = cleared["clearance"].as_str().unwrap().to_owned();
    // The scripted client spends it on a sign-up (the bot score asks it for one).
    let signup =
        |n: u32| json!({"email": format!("restart{n}@example.com"), "password": "correct horse battery staple"});
    let (status, body) =
        post(&c, format!("{url}/auth/register"), &signup(1), Some(("x-palisade-clearance", &clearance))).await;
    assert_eq!(status, 201, "{body}");
    // A browser-like client waits in the room for a pass and uses it once.
    let person = http();
    let (status, ticket) = post(&person, format!("{url}/auth/register"), &signup(2), None).await;
    assert_eq!(status, 202, "{ticket}");
    let poll = format!("{url}/auth/register/ticket?ticket={}", ticket["ticket"].as_str().unwrap());
    let mut admitted = Value::Null;
    for _ in 0..200 {
        admitted = person.get(&poll).send().await.unwrap().json().await.unwrap();
        if admitted["status"] == "admitted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pass = admitted["pass"].as_str().expect("admitted").to_owned();
    let (status, body) =
        post(&person, format!("{url}/auth/register"), &signup(2), Some(("x-palisade-pass", &pass))).await;
    assert_eq!(status, 201, "{body}");

    first.signal("TERM");
    first.wait_exit(Duration::from_secs(20));
    let second = Running::start(dir.path(), &args, &settings());
    let url = second.url.clone();

    let (status, body) = post(&c, format!("{url}/challenge"), &answer, None).await;
    assert_eq!(status, 403, "a redeemed solution is refused after the restart: {body}");
    let (status, body) =
        post(&c, format!("{url}/auth/register"), &signup(3), Some(("x-palisade-clearance", &clearance))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("challenge_required")),
        "a spent clearance: {body}"
    );
    let (status, body) =
        post(&person, format!("{url}/auth/register"), &signup(4), Some(("x-palisade-pass", &pass))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("ticket_invalid")), "a used pass: {body}");
}
