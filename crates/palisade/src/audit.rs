//! `palisade audit ...`: the audit log read straight from the store, so it can be
//! checked on a copy of the database with the gateway stopped.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use store::Store;

use crate::cli::AuditCommand;
use crate::config::Config;
use crate::serve::{existing_shield_key, runtime};

/// Entries per page while exporting.
const PAGE: i64 = 1000;

pub fn run(config_file: Option<&Path>, action: AuditCommand) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_file, std::env::vars())?;
    config.validate()?;
    runtime()?.block_on(async move {
        let url = config.database_url();
        let store = Store::open(&url).await.with_context(|| format!("opening {}", store::redact_url(&url)))?;
        store.migrate().await.context("applying database migrations")?;
        match action {
            AuditCommand::Verify { json } => verify(&store, &config, json).await,
            AuditCommand::Export { out, after } => export(&store, out.as_deref(), after).await,
        }
    })
}

async fn verify(store: &Store, config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let key = existing_shield_key(config)?;
    let report = store.verify_audit(key.as_ref()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if key.is_none() {
            eprintln!("no shield key found: checkpoint signatures not checked");
        }
        let signed = report.signed_through.map_or_else(|| "none".to_owned(), |s| format!("through entry {s}"));
        println!("{} entries, {} signed checkpoints checked (signed {signed})", report.entries, report.checkpoints);
        if report.intact() {
            println!("chain intact");
        } else {
            println!("CHAIN BROKEN:");
            for b in &report.breaks {
                println!("  {b}");
            }
        }
    }
    Ok(if report.intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn export(store: &Store, out: Option<&Path>, after: i64) -> anyhow::Result<ExitCode> {
    let mut sink: Box<dyn Write> = match out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut cursor = (after, i64::MAX);
    let mut written = 0u64;
    loop {
        let page = store.chain_page(cursor, PAGE).await?;
        for record in &page {
            serde_json::to_writer(&mut sink, record)?;
            sink.write_all(b"\n")?;
        }
        written += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == PAGE as usize => cursor = (last.seq.unwrap_or_default(), last.id),
            _ => break,
        }
    }
    sink.flush()?;
    eprintln!("exported {written} entries");
    Ok(ExitCode::SUCCESS)
}
