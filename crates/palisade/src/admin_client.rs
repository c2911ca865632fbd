//! `palisade admin ...`: a small HTTP client for the running gateway's admin API.

use std::process::ExitCode;

use accounts::service::operators::OPERATOR_TOKEN_TAG;
use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::cli::{
    AdminCommand, AdminTarget, AttackArg, ComponentCommand, FlagsCommand, IncidentCommand, ListCommand,
    MaintenanceCommand, OperatorCommand, RegistrationCommand, TierCommand,
};
use crate::config::Config;
use crate::serve::runtime;

/// The token a command presents: `--token`, else the operator token `palisade admin
/// login` saved, else the bootstrap secret.
fn token(target: &AdminTarget, config: &Config) -> anyhow::Result<String> {
    if let Some(token) = &target.token {
        return Ok(token.clone());
    }
    if let Ok(saved) = std::fs::read_to_string(config.operator_token_file()) {
        return Ok(saved.trim().to_owned());
    }
    if let Some(token) = &config.admin.token {
        return Ok(token.clone());
    }
    let path = config.admin_token_file();
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("no --token given, no operator logged in, and cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

/// One line from standard input (a password), prompting on a terminal.
fn read_secret(prompt: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal, Write};
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}: ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("cannot read the password from standard input")?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no password on standard input");
    }
    Ok(line)
}

pub fn run(target: AdminTarget, action: AdminCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(target.config.config.as_deref(), std::env::vars())?;
    let scheme = if config.admin.tls.is_some() { "https" } else { "http" };
    let base = target.url.clone().unwrap_or_else(|| format!("{scheme}://{}", config.admin.listen));
    let transport = Transport::new(&target)?;
    // Logging in and enrolling need no token; the rest present one.
    let token = match &action {
        AdminCommand::Login { .. } | AdminCommand::Operator { action: OperatorCommand::Enroll { .. } } => String::new(),
        _ => token(&target, &config)?,
    };
    let (method, path, body) = match &action {
        AdminCommand::Login { name, code } => {
            let password = read_secret("Password")?;
            ("POST", "/admin/login".to_owned(), Some(json!({"name": name, "password": password, "totp": code})))
        }
        AdminCommand::Logout => ("POST", "/admin/logout".to_owned(), None),
        AdminCommand::Whoami => ("GET", "/admin/whoami".to_owned(), None),
        AdminCommand::Operator { action } => match action {
            OperatorCommand::Add { name, role } => {
                ("POST", "/admin/operators".to_owned(), Some(json!({"name": name, "role": role})))
            }
            OperatorCommand::Enroll { name, setup_code } => {
                let password = read_secret("New password")?;
                let body = json!({"name": name, "setup_code": setup_code, "password": password});
                ("POST", "/admin/operators/enroll".to_owned(), Some(body))
            }
            OperatorCommand::List => ("GET", "/admin/operators".to_owned(), None),
            OperatorCommand::Role { name, role } => {
                ("PUT", format!("/admin/operators/{name}/role"), Some(json!({"role": role})))
            }
            OperatorCommand::Reset { name } => ("POST", format!("/admin/operators/{name}/reset"), None),
            OperatorCommand::Disable { name } => ("DELETE", format!("/admin/operators/{name}"), None),
        },
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
    let (status, answer) = runtime()?.block_on(transport.call(&base, method, &path, &token, body))?;
    let ok = (200..300).contains(&status);
    let logout = matches!(action, AdminCommand::Logout);
    // A token ended, or one the gateway no longer takes, is of no use kept.
    if (logout && ok) || (status == 401 && (logout || token.starts_with(OPERATOR_TOKEN_TAG))) {
        let _ = std::fs::remove_file(config.operator_token_file());
    }
    if !ok {
        let message = answer["error"]["message"].as_str().unwrap_or("no message");
        bail!("{method} {path} answered {status}: {message}");
    }
    if let AdminCommand::Login { .. } = &action {
        let token = answer["token"].as_str().context("the gateway's login answer has no token")?;
        let path = config.operator_token_file();
        crate::serve::write_private(&path, token.as_bytes())
            .with_context(|| format!("cannot save the operator token in {}", path.display()))?;
        println!(
            "logged in as {} ({}) for {} s; token saved in {}",
            answer["name"].as_str().unwrap_or("?"),
            answer["role"].as_str().unwrap_or("?"),
            answer["expires_in_s"],
            path.display()
        );
        return Ok(ExitCode::SUCCESS);
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

/// How the CLI reaches the admin API: plain HTTP, or TLS trusting `--ca-file` (and
/// presenting `--client-cert` when the listener asks for one).
struct Transport {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Transport {
    fn new(target: &AdminTarget) -> anyhow::Result<Transport> {
        let wants_tls = target.url.as_deref().is_some_and(|u| u.starts_with("https://"))
            || target.ca_file.is_some()
            || target.client_cert.is_some();
        if !wants_tls {
            return Ok(Transport { tls: None });
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = &target.ca_file {
            for cert in pem_certs(path)? {
                roots.add(cert).with_context(|| format!("--ca-file {}", path.display()))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = match (&target.client_cert, &target.client_key) {
            (Some(cert), Some(key)) => {
                use rustls_pki_types::pem::PemObject;
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key)
                    .with_context(|| format!("--client-key {}", key.display()))?;
                builder.with_client_auth_cert(pem_certs(cert)?, key).context("--client-cert and --client-key")?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Transport { tls: Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))) })
    }

    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/')).parse().context("bad --url")?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::HOST, uri.authority().map(|a| a.as_str()).unwrap_or("localhost"));
        if !token.is_empty() {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Full::new(Bytes::from(payload)))?;
        let unreachable = || format!("cannot reach the admin API at {base} (is `palisade serve` running?)");
        let send = async {
            match &self.tls {
                None => {
                    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                    let response = client.request(request).await.with_context(unreachable)?;
                    anyhow::Ok(response.map(http_body_util::Either::Left))
                }
                Some(connector) => {
                    let host = uri.host().context("--url has no host")?.to_owned();
                    let port = uri.port_u16().unwrap_or(443);
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.with_context(unreachable)?;
                    let name = rustls_pki_types::ServerName::try_from(host.clone()).context("--url host")?;
                    let tls = connector.connect(name, tcp).await.context("TLS handshake with the admin API failed")?;
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
                    tokio::spawn(connection);
                    // TLS 1.3 tells a client its certificate was refused only now.
                    let response = sender
                        .send_request(request)
                        .await
                        .context("the admin API closed the connection (does it require a client certificate?)")?;
                    anyhow::Ok(response.map(http_body_util::Either::Right))
                }
            }
        };
        let response = tokio::time::timeout(std::time::Duration::from_secs(10), send)
            .await
            .context("the gateway did not answer within 10s")??;
        let status = response.status().as_u16();
        let bytes =
            response.into_body().collect().await.map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?.to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }
}

fn pem_certs(path: &std::path::Path) -> anyhow::Result<Vec<rustls_pki_types::CertificateDer<'static>>> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}
