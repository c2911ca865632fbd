//! `palisade admin ...`: a small HTTP client for the running gateway's admin API.

use std::process::ExitCode;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::cli::{
    AdminCommand, AdminTarget, AttackArg, ComponentCommand, FlagsCommand, IncidentCommand, ListCommand,
    MaintenanceCommand, RegistrationCommand, TierCommand,
};
use crate::config::Config;
use crate::serve::runtime;

pub fn run(target: AdminTarget, action: AdminCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(target.config.config.as_deref(), std::env::vars())?;
    let base = target.url.unwrap_or_else(|| format!("http://{}", config.listen));
    let token = match target.token.or(config.admin.token.clone()) {
        Some(token) => token,
        None => {
            let path = config.admin_token_file();
            std::fs::read_to_string(&path)
                .with_context(|| format!("no --token given and cannot read {}", path.display()))?
                .trim()
                .to_owned()
        }
    };
    let (method, path, body) = match &action {
        AdminCommand::Registration { policy } => match policy {
            RegistrationCommand::Show => ("GET", "/admin/registration".to_owned(), None),
            RegistrationCommand::Open => ("PUT", "/admin/registration".to_owned(), Some(json!({"mode": "open"}))),
            RegistrationCommand::Regions { regions, message } => {
                let allow: Vec<String> = regions.iter().map(|r| r.to_ascii_uppercase()).collect();
                let body = json!({"mode": "regions", "allow": allow, "message": message});
                ("PUT", "/admin/registration".to_owned(), Some(body))
            }
            RegistrationCommand::InviteOnly { message } => {
                ("PUT", "/admin/registration".to_owned(), Some(json!({"mode": "invite_only", "message": message})))
            }
            RegistrationCommand::Closed { message } => {
                ("PUT", "/admin/registration".to_owned(), Some(json!({"mode": "closed", "message": message})))
            }
        },
        AdminCommand::Invite => ("POST", "/admin/invites".to_owned(), None),
        AdminCommand::MfaReset { user } => ("POST", format!("/admin/users/{user}/mfa/reset"), None),
        AdminCommand::Tier { action: TierCommand::Pin { user, tier } } => {
            ("PUT", format!("/admin/users/{user}/tier"), Some(json!({"tier": tier})))
        }
        AdminCommand::Tier { action: TierCommand::Lift { user } } => {
            ("DELETE", format!("/admin/users/{user}/tier"), None)
        }
        AdminCommand::Incident { action } => match action {
            IncidentCommand::List => ("GET", "/admin/incidents".to_owned(), None),
            IncidentCommand::Open { name, impact, status, components, message } => {
                let body = json!({"name": name, "impact": impact, "status": status, "component_ids": components,
                                  "body": message});
                ("POST", "/admin/incidents".to_owned(), Some(body))
            }
            IncidentCommand::Update { id, status, message, name, impact, components } => {
                let mut body = json!({"status": status, "body": message});
                if let Some(name) = name {
                    body["name"] = json!(name);
                }
                if let Some(impact) = impact {
                    body["impact"] = json!(impact);
                }
                if !components.is_empty() {
                    body["component_ids"] = json!(components);
                }
                ("POST", format!("/admin/incidents/{id}/updates"), Some(body))
            }
            IncidentCommand::Resolve { id, message } => {
                ("POST", format!("/admin/incidents/{id}/resolve"), Some(json!({"body": message})))
            }
        },
        AdminCommand::Component { action: ComponentCommand::Set { id, status, clear } } => {
            let status = if *clear { None } else { status.clone() };
            ("PUT", format!("/admin/components/{id}"), Some(json!({"status": status})))
        }
        AdminCommand::Maintenance {
            action: MaintenanceCommand::Schedule { name, from, until, components, message },
        } => {
            let body = json!({"name": name, "body": message, "component_ids": components,
                              "scheduled_for": from, "scheduled_until": until});
            ("POST", "/admin/maintenances".to_owned(), Some(body))
        }
        AdminCommand::Block { action } => list_request("block", action),
        AdminCommand::Allow { action } => list_request("allow", action),
        AdminCommand::Flags { action } => match action {
            None | Some(FlagsCommand::List) => ("GET", "/admin/flags".to_owned(), None),
            Some(FlagsCommand::Clear { caller }) => ("DELETE", format!("/admin/flags/{caller}"), None),
            Some(FlagsCommand::ClearCohort { user }) => ("DELETE", format!("/admin/users/{user}/cohort"), None),
        },
        AdminCommand::Attack { mode } => match mode {
            AttackArg::Show => ("GET", "/admin/attack-mode".to_owned(), None),
            AttackArg::On => ("PUT", "/admin/attack-mode".to_owned(), Some(json!({"mode": "on"}))),
            AttackArg::Off => ("PUT", "/admin/attack-mode".to_owned(), Some(json!({"mode": "off"}))),
            AttackArg::Auto => ("PUT", "/admin/attack-mode".to_owned(), Some(json!({"mode": "auto"}))),
        },
        AdminCommand::Audit { limit, action } => {
            let filter = action.as_ref().map(|a| format!("&action={a}")).unwrap_or_default();
            ("GET", format!("/admin/audit?limit={limit}{filter}"), None)
        }
    };
    let (status, answer) = runtime()?.block_on(call(&base, method, &path, &token, body))?;
    if !(200..300).contains(&status) {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        bail!("{method} {path} answered {status}: {message}");
    }
    if let AdminCommand::Block { action: ListCommand::List } | AdminCommand::Allow { action: ListCommand::List } =
        &action
    {
        let kind = if matches!(action, AdminCommand::Block { .. }) { "block" } else { "allow" };
        print_entries(&answer, kind);
    } else if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!("ok");
    }
    Ok(ExitCode::SUCCESS)
}

fn list_request(kind: &str, action: &ListCommand) -> (&'static str, String, Option<Value>) {
    let path = "/admin/blocklist".to_owned();
    match action {
        ListCommand::Add { cidr, ttl, note } => {
            ("POST", path, Some(json!({"kind": kind, "cidr": cidr, "ttl_s": ttl, "note": note})))
        }
        ListCommand::Remove { cidr } => ("DELETE", path, Some(json!({"kind": kind, "cidr": cidr}))),
        ListCommand::List => ("GET", path, None),
    }
}

/// One line per entry: network, expiry (Unix seconds or `never`), note.
fn print_entries(answer: &Value, kind: &str) {
    let entries = answer["entries"].as_array().map(Vec::as_slice).unwrap_or_default();
    for e in entries.iter().filter(|e| e["kind"] == kind) {
        let expires = e["expires_at"].as_u64().map_or("never".to_owned(), |t| t.to_string());
        println!("{:<43} {:<12} {}", e["cidr"].as_str().unwrap_or("?"), expires, e["note"].as_str().unwrap_or(""));
    }
}

async fn call(base: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/')).parse().context("bad --url")?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(payload)))?;
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), client.request(request))
        .await
        .context("the gateway did not answer within 10s")?
        .with_context(|| format!("cannot reach the gateway at {base} (is `palisade serve` running?)"))?;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await?.to_bytes();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok((status, value))
}
