//! `palisade.toml` and its `PALISADE_*` environment overrides.
//!
//! Precedence, lowest first: built-in defaults, the file, the environment, the
//! command line. An environment variable names a field by its path with `__`
//! between levels: `PALISADE_LISTEN`, `PALISADE_PROXY__MAX_BODY_BYTES`,
//! `PALISADE_UPSTREAMS='[{name="a", url="http://127.0.0.1:8000"}]'`. Its value is
//! read as a TOML value when it parses as one, else as a string.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use accounts::service::AccountsConfig;
use gateway::config::{AuthConfig, ProxyConfig, ServerConfig, StatusConfig, UpstreamConfig};
use gateway::edge::ShieldConfig;
use gateway::upstream::validate_upstreams;
use gateway::validation::InvalidField;
use serde::{Deserialize, Serialize};

use crate::cli::LogFormat;

/// The whole configuration. Every default makes `palisade serve` work alone.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    pub listen: SocketAddr,
    /// Directory for the embedded state (SQLite database, generated keys).
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; default: SQLite in `data_dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// `redis://…`: several nodes share limits, proof-of-work replay claims and switches;
    /// absent: one node, everything in process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_state: Option<String>,
    /// How this node takes part in a fleet (only with `shared_state`).
    pub fleet: gateway::config::FleetSettings,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub proxy: ProxyConfig,
    /// Model servers. When empty, a built-in simulated model is started.
    pub upstreams: Vec<UpstreamConfig>,
    /// The built-in simulated model, used only when `upstreams` is empty.
    pub simulator: SimulatorConfig,
    pub auth: AuthConfig,
    pub accounts: AccountsConfig,
    pub pii: PiiConfig,
    pub notify: NotifyConfig,
    pub admin: AdminConfig,
    pub status: StatusConfig,
    /// Priority admission in front of the model servers.
    pub admission: admission::AdmissionConfig,
    /// Which priority class requests get (per key, per route).
    pub priority: gateway::priority::PriorityConfig,
    /// System prompts, leak scanning and prompt scoring on /v1.
    pub guard: aiguard::GuardConfig,
    /// Strikes from the guard: when callers are throttled or suspended.
    pub abuse: gateway::abuse::AbusePolicy,
    /// Edge defence: block lists, rate limits, proof-of-work, bot score, attack mode.
    pub shield: ShieldConfig,
}

/// Where the key that encrypts personal data at rest comes from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// Key file; default `<data_dir>/pii.key`, generated on first start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The key material itself (the key file's entries joined by `;`), e.g. from
    /// the environment as PALISADE_PII__KEY; takes precedence over `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// How one-time codes reach users.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// POST each message here (see README); default: the local outbox file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// HMAC key for the webhook's `x-palisade-signature`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// Send e-mail codes through this SMTP server: `smtp://user:password@host:587?tls=required`
    /// (STARTTLS) or `smtps://user:password@host:465`. Text messages still go to the
    /// webhook (or the outbox).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<String>,
    /// The sender of those e-mails, e.g. `Palisade <no-reply@example.com>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_from: Option<String>,
    /// PEM file with the certificate(s) of a private CA that issued the SMTP server's
    /// certificate, trusted on top of the public roots. Only with TLS in `smtp_url`; read
    /// once at start, where a file that cannot be read or holds no certificate is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_ca_file: Option<PathBuf>,
}

/// The operator API.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin API's own address, apart from the public listener.
    pub listen: SocketAddr,
    /// The bootstrap secret (admin token); default: `<data_dir>/admin.token`, generated
    /// on first start. It does everything until an operator enrolls, then only manages
    /// operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// TLS on the admin listener; with `client_ca_file`, client certificates are required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<gateway::tls::TlsConfig>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: SocketAddr::from(([127, 0, 0, 1], 8081)), token: None, tls: None }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("palisade-data"),
            database_url: None,
            shared_state: None,
            fleet: gateway::config::FleetSettings::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            proxy: ProxyConfig::default(),
            upstreams: Vec::new(),
            simulator: SimulatorConfig::default(),
            auth: AuthConfig::default(),
            accounts: AccountsConfig::default(),
            pii: PiiConfig::default(),
            notify: NotifyConfig::default(),
            admin: AdminConfig::default(),
            status: StatusConfig::default(),
            admission: admission::AdmissionConfig::default(),
            priority: gateway::priority::PriorityConfig::default(),
            guard: aiguard::GuardConfig::default(),
            abuse: gateway::abuse::AbusePolicy::default(),
            shield: ShieldConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,gateway=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Pretty, level: "info".to_owned() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorConfig {
    pub capacity: usize,
    pub ttft_ms: u64,
    pub tokens_per_s: u32,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig { capacity: 64, ttft_ms: 50, tokens_per_s: 200 }
    }
}

/// Why a configuration could not be used. Each names the field or the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{field}: {message}")]
    Field { field: String, message: String },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<InvalidField>),
}

/// Variables with the prefix that are not configuration fields.
const NOT_FIELDS: [&str; 1] = ["PALISADE_CONFIG"];
const TEST_PREFIX: &str = "PALISADE_TEST_";

impl Config {
    /// Load defaults, then `file` if given, then `PALISADE_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                Self::parse(&text, path, env)
            }
            None => Self::from_table(toml::Table::new(), env),
        }
    }

    /// [`Self::load`] of a file's text, already read; `path` only names it in errors.
    pub fn parse(
        text: &str,
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        Self::from_table(table, env)
    }

    fn from_table(
        mut table: toml::Table,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut from_env = Vec::new();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix("PALISADE_") else {
                continue;
            };
            if NOT_FIELDS.contains(&var.as_str()) || var.starts_with(TEST_PREFIX) || rest.is_empty() {
                continue;
            }
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            set_path(&mut table, &path, parse_env_value(&raw))
                .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
            from_env.push((path.join("."), var));
        }
        let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let field = e.path().to_string();
            let origin = from_env
                .iter()
                .find(|(path, _)| field.starts_with(path.as_str()) || e.inner().to_string().contains(path.as_str()))
                .map(|(_, var)| format!(" (set by {var})"))
                .unwrap_or_default();
            ConfigError::Field {
                field: if field == "." { "(top level)".to_owned() } else { field },
                message: format!("{}{origin}", e.into_inner()),
            }
        })?;
        Ok(config)
    }

    /// Check values that parse but cannot work; every bad field is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.server.validate(&mut problems);
        self.proxy.validate(&mut problems);
        self.status.validate(&mut problems);
        validate_upstreams(&self.upstreams, &mut problems);
        self.priority.validate(&mut problems);
        self.abuse.validate(&mut problems);
        if let Err(e) = self.guard.validate() {
            for message in &e.problems {
                let (field, reason) = message.split_once(": ").unwrap_or(("guard", message.as_str()));
                problems.push(InvalidField { field: format!("guard.{field}"), reason: reason.to_owned() });
            }
        }
        if let Err(errors) = self.admission.validate() {
            for message in errors {
                // Each message starts with the field's path.
                let (field, reason) = message.split_once(' ').unwrap_or(("admission", message.as_str()));
                problems.push(InvalidField { field: field.to_owned(), reason: reason.to_owned() });
            }
        }
        self.shield.validate(&mut problems);
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:"))
        {
            problems.push(InvalidField {
                field: "database_url".into(),
                reason: "must start with sqlite:// or postgres://".into(),
            });
        }
        self.fleet.validate(&mut problems);
        if let Some(url) = &self.shared_state
            && !(url.starts_with("redis://") || url.starts_with("rediss://") || url.starts_with("redis+unix://"))
        {
            problems.push(InvalidField {
                field: "shared_state".into(),
                reason: "must start with redis://, rediss:// or redis+unix://".into(),
            });
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            problems.push(InvalidField {
                field: "log.level".into(),
                reason: format!("`{}` is not a log filter (try `info` or `info,gateway=debug`)", self.log.level),
            });
        }
        validate_texts(&self.accounts, &mut problems);
        if self.notify.smtp_url.is_some() != self.notify.smtp_from.is_some() {
            problems.push(InvalidField { field: "notify".into(), reason: "smtp_url and smtp_from go together".into() });
        }
        if self.notify.smtp_ca_file.is_some() && self.notify.smtp_url.is_none() {
            problems.push(InvalidField { field: "notify.smtp_ca_file".into(), reason: "needs smtp_url".into() });
        }
        if self.notify.webhook_url.is_some() != self.notify.webhook_secret.is_some() {
            problems.push(InvalidField {
                field: "notify".into(),
                reason: "webhook_url and webhook_secret go together".into(),
            });
        }
        // Read here too, so `palisade config check` finds a wrong path before a restart does.
        if let Some(Err(e)) = self.admin.tls.as_ref().map(gateway::tls::Tls::admin) {
            problems.push(match e {
                gateway::tls::TlsError::File { field, path, problem, .. } => InvalidField {
                    field: format!("admin.tls.{field}"),
                    reason: format!("{}: {problem}", path.display()),
                },
                other => InvalidField { field: "admin.tls".into(), reason: other.to_string() },
            });
        }
        if self.server.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some()) {
            problems.push(InvalidField {
                field: "server.tls.client_ca_file".into(),
                reason: "client certificates are for the admin listener only ([admin.tls])".into(),
            });
        }
        if self.admin.listen == self.listen && self.listen.port() != 0 {
            problems.push(InvalidField {
                field: "admin.listen".into(),
                reason: "must differ from listen: the admin API has an address of its own".into(),
            });
        }
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 24) {
            problems
                .push(InvalidField { field: "admin.token".into(), reason: "must be at least 24 characters".into() });
        }
        if self.upstreams.is_empty() && self.simulator.capacity == 0 {
            problems.push(InvalidField { field: "simulator.capacity".into(), reason: "must be at least 1".into() });
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }

    pub fn pii_key_file(&self) -> PathBuf {
        self.pii.key_file.clone().unwrap_or_else(|| self.data_dir.join("pii.key"))
    }

    /// Where the shield's signing key is kept when not given inline.
    pub fn shield_key_file(&self) -> PathBuf {
        self.shield.secret_file.clone().unwrap_or_else(|| self.data_dir.join("shield.key"))
    }

    /// Where `palisade admin login` keeps the operator's token.
    pub fn operator_token_file(&self) -> PathBuf {
        self.data_dir.join("operator.token")
    }

    pub fn admin_token_file(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The database to open: the configured URL, or SQLite inside `data_dir`.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("palisade.db").display()),
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // `v = <raw>` parses when raw is a TOML literal (number, bool, array, inline table).
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty field name")?;
    let mut current = table;
    for key in parents {
        let entry = current.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("`{key}` is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

/// `palisade config check FILE`: print every problem, exit non-zero if any.
pub fn check_command(file: &Path) -> ExitCode {
    match Config::load(Some(file), std::env::vars()).and_then(|c| c.validate()) {
        Ok(()) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("{}: {line}", file.display());
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("palisade-cfg-{}-{}", std::process::id(), fastrand()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, text).unwrap();
        let result = Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    fn fastrand() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load(None, Vec::new()).unwrap();
        assert_eq!(config, Config::default());
        config.validate().unwrap();
        assert_eq!(config.database_url(), "sqlite://palisade-data/palisade.db");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../palisade.example.toml");
        let config = Config::load(Some(Path::new(example)), Vec::new()).unwrap();
        config.validate().unwrap();
        // Every top-level default field is documented in the example.
        let text = std::fs::read_to_string(example).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for key in defaults.keys() {
            assert!(text.contains(&format!("{key} =")) || text.contains(&format!("[{key}")), "{key} undocumented");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_str(
            "listen = \"127.0.0.1:1\"\n[proxy]\nmax_body_bytes = 10\n",
            &[
                ("PALISADE_LISTEN", "127.0.0.1:2"),
                ("PALISADE_PROXY__MAX_BODY_BYTES", "20"),
                ("PALISADE_UPSTREAMS", "[{name = \"a\", url = \"http://127.0.0.1:9\"}]"),
                ("PALISADE_CONFIG", "ignored.toml"),
                ("PALISADE_TEST_POSTGRES_URL", "ignored"),
                ("OTHER", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:2".parse().unwrap());
        assert_eq!(config.proxy.max_body_bytes, 20);
        assert_eq!(config.upstreams[0].name, "a");
    }

    #[test]
    fn errors_name_the_field() {
        let e = load_str("[proxy]\nmax_body_bytes = \"big\"\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("proxy.max_body_bytes: "), "{e}");
        let e = load_str("[proxy]\nmax_bodybytes = 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("proxy") && e.contains("max_bodybytes"), "{e}");
        let e = load_str("[[upstreams]]\nname = \"a\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("upstreams[0]") && e.contains("url"), "{e}");
        let e = load_str("listen = \"nowhere\"\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("listen: "), "{e}");
        let e = load_str("", &[("PALISADE_PROXY__MAX_BODY_BYTES", "-1")]).unwrap_err().to_string();
        assert!(e.contains("proxy.max_body_bytes") && e.contains("PALISADE_PROXY__MAX_BODY_BYTES"), "{e}");
        let e = load_str("listen = [", &[]).unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn validation_reports_every_bad_field() {
        let config = load_str(
            "[proxy]\nmax_body_bytes = 0\n[[upstreams]]\nname = \"a\"\nurl = \"https://x\"\n[[upstreams]]\nname = \"a\"\nurl = \"http://y\"\n",
            &[],
        )
        .unwrap();
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("proxy.max_body_bytes: must be greater than 0"), "{e}");
        assert!(e.contains("upstreams[0].url: https upstreams are not supported"), "{e}");
        assert!(e.contains("upstreams[1].name: `a` is used twice"), "{e}");
    }

    #[test]
    fn the_smtp_ca_file_goes_with_an_smtp_url() {
        let config = load_str("[notify]\nsmtp_ca_file = \"/etc/palisade/mail-ca.pem\"\n", &[]).unwrap();
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("notify.smtp_ca_file: needs smtp_url"), "{e}");
        let config = load_str(
            "[notify]\nsmtp_url = \"smtp://mail.internal:587?tls=required\"\nsmtp_from = \"P <p@example.com>\"\n",
            &[("PALISADE_NOTIFY__SMTP_CA_FILE", "/etc/palisade/mail-ca.pem")],
        )
        .unwrap();
        assert_eq!(config.notify.smtp_ca_file.as_deref(), Some(Path::new("/etc/palisade/mail-ca.pem")));
        config.validate().unwrap();
    }

    #[test]
    fn shield_fields_are_checked_and_the_secret_comes_from_the_environment() {
        let config = load_str(
            "[shield]\ntrusted_proxies = [\"10.0.0.1/8\"]\n[shield.limits.per_ip]\ncount = 0\nperiod_ms = 1000\nburst = 1\n",
            &[("PALISADE_SHIELD__SECRET", &"ab".repeat(32))],
        )
        .unwrap();
        assert_eq!(config.shield.secret.as_deref(), Some("ab".repeat(32).as_str()));
        let e = config.validate().unwrap_err().to_string();
        assert!(e.contains("shield.limits.per_ip.count"), "{e}");
        assert!(e.contains("shield.trusted_proxies[0]"), "{e}");
        let e = load_str("[shield]\ntrusted_proxy = []\n", &[]).unwrap_err().to_string();
        assert!(e.contains("shield") && e.contains("trusted_proxy"), "{e}");
    }

    #[test]
    fn shared_state_and_the_fleet_section_are_checked() {
        let config = load_str(
            "shared_state = \"http://redis\"\n[fleet]\nnodes = 0\npoll_ms = 5000\nkey_prefix = \"a{b}\"\n",
            &[],
        )
        .unwrap();
        let e = config.validate().unwrap_err().to_string();
        for field in ["shared_state:", "fleet.nodes", "fleet.poll_ms", "fleet.key_prefix"] {
            assert!(e.contains(field), "{field} in {e}");
        }
        let config = load_str("shared_state = \"redis://10.0.0.5:6379\"\n[fleet]\nnodes = 3\n", &[]).unwrap();
        config.validate().unwrap();
        assert_eq!(config.fleet.nodes, 3);
    }
}

/// The SMS breaker's fields: shares in [0, 1] in order, a difficulty a browser can pay,
/// home regions that are regions.
fn validate_texts(a: &AccountsConfig, problems: &mut Vec<InvalidField>) {
    let mut bad = |field: &str, reason: String| {
        problems.push(InvalidField { field: format!("accounts.{field}"), reason });
    };
    for (field, share) in [("sms_pause_below", a.sms_pause_below), ("sms_proof_below", a.sms_proof_below)] {
        if !(0.0..=1.0).contains(&share) {
            bad(field, "must be a share between 0 and 1".into());
        }
    }
    if a.sms_proof_below < a.sms_pause_below {
        bad("sms_proof_below", "must be at least sms_pause_below (the proof of work comes before the pause)".into());
    }
    if !(1..=shield::pow::MAX_DIFFICULTY).contains(&a.sms_proof_difficulty) {
        bad("sms_proof_difficulty", format!("must be 1..={} bits", shield::pow::MAX_DIFFICULTY));
    }
    for region in &a.sms_home_regions {
        if accounts::policy::Region::new(region).is_err() {
            bad("sms_home_regions", format!("`{region}` is not a two-letter region code such as \"CN\""));
        }
    }
    if a.sms_auto_narrow && a.sms_home_regions.is_empty() {
        bad("sms_auto_narrow", "needs sms_home_regions: the regions registration narrows to".into());
    }
}
