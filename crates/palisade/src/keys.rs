//! `palisade keys ...`: API keys and the personal-data key, worked on directly in
//! the store (so the quick start can make a key before anything is running).

use std::path::Path;
use std::process::ExitCode;

use accounts::crypto::PiiKeys;
use anyhow::Context;

use crate::cli::KeysCommand;
use crate::config::Config;
use crate::serve::{open_accounts, runtime};

pub fn run(config_file: Option<&Path>, action: KeysCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file, std::env::vars())?;
    config.validate()?;
    runtime()?.block_on(async move {
        match action {
            KeysCommand::Create { name, user, scopes, rpm } => {
                let accounts = open_accounts(&config).await?;
                let user = match user {
                    Some(id) => id,
                    None => accounts.service_user().await?,
                };
                let (prefix, key) = accounts.create_key(user, &name, &scopes, rpm, "operator").await?;
                eprintln!("created API key {prefix} for user {user}; it is shown only this once:");
                println!("{key}");
            }
            KeysCommand::List => {
                let accounts = open_accounts(&config).await?;
                println!("{:<14} {:>6}  {:<20} {:<18} {:>6}  STATE", "PREFIX", "USER", "NAME", "SCOPES", "RPM");
                for key in accounts.store().all_api_keys().await? {
                    let state = if key.revoked_at.is_some() { "revoked" } else { "active" };
                    let rpm = key.rpm_limit.map_or_else(|| "-".to_owned(), |r| r.to_string());
                    println!(
                        "{:<14} {:>6}  {:<20} {:<18} {rpm:>6}  {state}",
                        key.prefix, key.user_id, key.name, key.scopes
                    );
                }
            }
            KeysCommand::Revoke { prefix } => {
                let accounts = open_accounts(&config).await?;
                accounts.revoke_key(&prefix, None, "operator").await.with_context(|| format!("revoking {prefix}"))?;
                println!("revoked {prefix}");
            }
            KeysCommand::Rotate => {
                let path = config.pii_key_file();
                let (mut keys, _) = PiiKeys::load_or_generate(&path)?;
                let id = keys.rotate();
                // Written before re-encrypting: a running gateway that meets a
                // blob under the new key reloads this file, so it keeps serving.
                keys.save(&path).with_context(|| format!("writing {}", path.display()))?;
                let accounts = open_accounts(&config).await?;
                let rewritten = accounts.reencrypt_all().await?;
                println!("key {id} is now current in {}; re-encrypted {rewritten} account(s)", path.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
