//! `palisade serve` and `palisade sim-upstream`: wiring only. Everything with
//! logic in it lives in the library crates.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use accounts::crypto::PiiKeys;
use accounts::notify::{Notifier, SmtpRelay};
use accounts::service::Accounts;
use accounts::tokens;
use anyhow::Context;
use drill::sim::{self, SimConfig};
use gateway::config::UpstreamConfig;
use gateway::{Gateway, GatewayConfig};
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::cli::{ServeArgs, SimArgs};
use crate::config::Config;
use crate::logging;

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    config.validate()?;
    logging::init(config.log.format, &config.log.level);
    runtime()?.block_on(serve_config(config))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")
}

async fn serve_config(mut config: Config) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let accounts = open_accounts(&config).await?;
    let store = accounts.store().clone();
    let admin_token = admin_token(&config)?;

    let mut simulator = None;
    if config.upstreams.is_empty() {
        let listener = TcpListener::bind("127.0.0.1:0").await.context("binding the built-in simulated model")?;
        let addr = listener.local_addr()?;
        let sim_config = SimConfig {
            capacity: config.simulator.capacity,
            queue: config.simulator.capacity,
            ttft: Duration::from_millis(config.simulator.ttft_ms),
            tokens_per_s: config.simulator.tokens_per_s,
            ..SimConfig::default()
        };
        simulator = Some(tokio::spawn(sim::serve(listener, sim_config, wait_for(stop_rx.clone()))));
        config.upstreams.push(UpstreamConfig {
            name: "builtin-sim".to_owned(),
            url: format!("http://{addr}"),
            api_key: None,
            models: Vec::new(),
        });
        tracing::warn!(
            upstream = %addr,
            "NO UPSTREAM CONFIGURED: serving the built-in SIMULATED model (canned replies). \
             Add [[upstreams]] to palisade.toml to proxy a real model server."
        );
    }

    let gateway_config = GatewayConfig {
        listen: Some(config.listen),
        server: config.server.clone(),
        proxy: config.proxy.clone(),
        upstreams: config.upstreams.clone(),
        auth: config.auth.clone(),
        admin_token_hash: Some(tokens::hash(&admin_token)),
        admin_tls: config.admin.tls.clone(),
        admission: config.admission.clone(),
        priority: config.priority.clone(),
        guard: config.guard.clone(),
        abuse: config.abuse.clone(),
        status: config.status.clone(),
        shield: config.shield.clone(),
        shield_key: Some(shield_key(&config)?),
        shared_state: config.shared_state.clone(),
        fleet: config.fleet.clone(),
    };
    let audit_signer = tokio::spawn(checkpoint_audit(store.clone(), shield_key(&config)?, stop_rx.clone()));
    let gateway = Gateway::new(gateway_config, accounts)?;
    gateway.join_fleet().await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is another server using it?)", config.listen))?;
    let address = listener.local_addr()?;
    let admin = TcpListener::bind(config.admin.listen).await.with_context(|| {
        format!("cannot listen on admin.listen {} (is another server using it?)", config.admin.listen)
    })?;
    let admin_address = admin.local_addr()?;
    let scheme = if gateway.tls().is_some() { "https" } else { "http" };
    if gateway.tls().is_some() || gateway.admin_tls().is_some() {
        reload_tls_on_hangup(gateway.clone())?;
    }
    let admin_scheme = if gateway.admin_tls().is_some() { "https" } else { "http" };
    tracing::info!(address = %format!("{admin_scheme}://{admin_address}"), "admin API listening");
    if accounts_have_no_operator(&gateway).await {
        tracing::warn!(
            "no operator has enrolled: the bootstrap secret (admin token) can do everything on the admin API \
             until one does; add one with `palisade admin operator add <name> --role admin`"
        );
    }
    tracing::info!(address = %format!("{scheme}://{address}"), upstreams = config.upstreams.len(), "listening");

    gateway::run_with_admin(Arc::clone(&gateway), listener, Some(admin), wait_for(stop_rx)).await?;
    if let Some(simulator) = simulator {
        simulator.abort();
    }
    // The last checkpoint covers what was written until the end.
    let _ = tokio::time::timeout(Duration::from_secs(5), audit_signer).await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Open the store (creating the data directory for the embedded default),
/// apply migrations, load or create the personal-data key, and build the
/// account service.
pub(crate) async fn open_accounts(config: &Config) -> anyhow::Result<Arc<Accounts>> {
    create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::open(&url).await.with_context(|| format!("opening {}", store::redact_url(&url)))?;
    store.migrate().await.context("applying database migrations")?;
    tracing::info!(database = %store::redact_url(&url), "store ready, migrations applied");

    let key_file = config.pii_key_file();
    let keys = match &config.pii.key {
        Some(material) => PiiKeys::from_env_value(material).context("pii.key")?,
        None => {
            let (keys, generated) = PiiKeys::load_or_generate(&key_file)
                .with_context(|| format!("loading the personal-data key {}", key_file.display()))?;
            if generated {
                tracing::warn!(
                    path = %key_file.display(),
                    "generated a new key for personal data at rest; BACK IT UP: without it stored phone numbers \
                     and e-mail addresses cannot be read"
                );
            }
            keys
        }
    };
    check_index_key(&store, &keys).await?;
    let notifier = match (&config.notify.webhook_url, &config.notify.webhook_secret) {
        (Some(url), Some(secret)) => Notifier::webhook(url, secret.as_bytes()).context("notify.webhook_url")?,
        _ => Notifier::outbox(config.data_dir.join("outbox.jsonl")),
    };
    let notifier = match (&config.notify.smtp_url, &config.notify.smtp_from) {
        (Some(url), Some(from)) => {
            let ca_pem = match &config.notify.smtp_ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .with_context(|| format!("notify.smtp_ca_file: cannot read {}", path.display()))?,
                ),
                None => None,
            };
            let relay = SmtpRelay { url, from, ca_pem: ca_pem.as_deref() };
            Notifier::smtp(relay, notifier).context("setting up e-mail delivery over SMTP")?
        }
        _ => notifier,
    };
    let accounts = Accounts::new(store, keys, notifier, config.accounts.clone()).await?;
    if config.pii.key.is_none() {
        accounts.watch_key_file(key_file);
    }
    Ok(Arc::new(accounts))
}

/// The store remembers which blind-index key its accounts were written with (the first
/// process records it). A process with another key (a second node given its own
/// `pii.key`, a key file lost and regenerated) would find no account and let the same
/// phone number register twice: it refuses to start instead.
async fn check_index_key(store: &Store, keys: &PiiKeys) -> anyhow::Result<()> {
    const META: &str = "pii_index_key_fingerprint";
    let mine = keys.index_fingerprint();
    match store.meta(META).await.context("reading the personal-data key fingerprint")? {
        Some(recorded) if recorded == mine => Ok(()),
        Some(recorded) => anyhow::bail!(
            "this database's accounts were indexed with another personal-data key (fingerprint {recorded}, this \
             process has {mine}): give every node the same `pii.key` (or copy <data_dir>/pii.key), or restore \
             the key file this database was written with"
        ),
        None => store.set_meta(META, &mine).await.context("recording the personal-data key fingerprint"),
    }
}

/// The admin token: configured, or kept in `<data_dir>/admin.token` (made once).
fn admin_token(config: &Config) -> anyhow::Result<String> {
    if let Some(token) = &config.admin.token {
        return Ok(token.clone());
    }
    let path = config.admin_token_file();
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => Ok(token.trim().to_owned()),
        _ => {
            let token = tokens::SessionToken::generate().as_str().to_owned();
            write_private(&path, token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!(path = %path.display(), "generated an admin token for /admin and `palisade admin`");
            Ok(token)
        }
    }
}

/// The key that signs proof-of-work challenges, clearances and waiting-room tickets:
/// `shield.secret`, else the key file (`<data_dir>/shield.key` unless configured),
/// generated on first start.
fn shield_key(config: &Config) -> anyhow::Result<[u8; 32]> {
    use gateway::edge::config::format_secret;
    match existing_shield_key(config) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => {
            let path = config.shield_key_file();
            let key = tokens::hash(tokens::SessionToken::generate().as_str());
            write_private(&path, format_secret(&key).as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!(path = %path.display(), "generated the shield's signing key; give every gateway node the same one");
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The shield's key if there is one (configured, or in its file); never makes one.
pub(crate) fn existing_shield_key(config: &Config) -> anyhow::Result<Option<[u8; 32]>> {
    use gateway::edge::config::parse_secret;
    if let Some(secret) = &config.shield.secret {
        return parse_secret(secret).map(Some).context("shield.secret: must be 64 hex characters");
    }
    let path = config.shield_key_file();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            parse_secret(&text).map(Some).with_context(|| format!("{}: expected 64 hex characters", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// How often the audit chain's end is signed (and once more on shutdown).
const AUDIT_CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// Sign the audit chain's end now and then with the shield's key, which the database
/// does not hold: a rewrite of the log before a checkpoint then shows in
/// `palisade audit verify`. Several nodes may sign the same end; the first wins.
async fn checkpoint_audit(store: store::Store, key: [u8; 32], mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(AUDIT_CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        match store.checkpoint_audit(&key, now).await {
            Ok(Some(seq)) => tracing::debug!(seq, "audit chain checkpoint signed"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not sign the audit chain's checkpoint"),
        }
        if stopping {
            return;
        }
    }
}

/// Create the data directory (and missing parents) so only its owner can enter it: it
/// holds the keys, the admin token, the database and the outbox of one-time codes. An
/// existing directory keeps its mode.
fn create_private_dir(path: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// Write a file only its owner can read.
pub(crate) fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

pub fn sim_upstream(args: SimArgs) -> anyhow::Result<ExitCode> {
    logging::init(args.log_format, "info");
    let config = SimConfig {
        capacity: args.capacity.max(1),
        queue: args.queue.unwrap_or(args.capacity),
        queue_timeout: Duration::from_millis(args.queue_timeout_ms),
        ttft: Duration::from_millis(args.ttft_ms),
        tokens_per_s: args.tokens_per_s,
        seed: args.seed,
        echo_system_prompt: args.echo_system_prompt,
        default_max_tokens: args.max_tokens,
        model: args.model,
    };
    runtime()?.block_on(async move {
        let listener =
            TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        tracing::info!(address = %format!("http://{address}"), capacity = config.capacity, "simulated model listening");
        sim::serve(listener, config, shutdown_signal()).await.context("simulated model server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}

/// On SIGHUP, read the TLS certificate and key again: handshakes from then on present
/// the new certificate, connections already open go on. A file that does not load
/// leaves the certificate in use as it was. The handler is in place when this returns
/// (before the "listening" line), so an early SIGHUP cannot end the process.
fn reload_tls_on_hangup(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = signal(SignalKind::hangup()).context("cannot listen for SIGHUP (TLS certificate reload)")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                for tls in [gateway.tls(), gateway.admin_tls()].into_iter().flatten() {
                    let cert_file = tls.files().cert_file.display().to_string();
                    match tls.reload() {
                        Ok(()) => tracing::info!(%cert_file, "TLS certificate reloaded"),
                        Err(error) => tracing::error!(
                            %error, %cert_file, "TLS certificate reload failed; still serving the previous one"
                        ),
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = gateway;
    Ok(())
}

async fn accounts_have_no_operator(gateway: &Gateway) -> bool {
    gateway.accounts().active_operators().await.is_ok_and(|n| n == 0)
}

async fn wait_for(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
