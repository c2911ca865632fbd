//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "palisade", version, about = "The front door for AI assistant services", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway. With no configuration it listens on 127.0.0.1:8080, keeps
    /// its state in ./palisade-data/ and serves a built-in simulated model.
    Serve(ServeArgs),
    /// Run a simulated OpenAI-compatible model server (for demos, tests, benchmarks).
    SimUpstream(SimArgs),
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Manage API keys and the personal-data encryption key, directly in the store.
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// The audit log, read directly from the store: check its hash chain and signed
    /// checkpoints, or export it as JSON lines.
    Audit {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: AuditCommand,
    },
    /// Proof-of-work challenges, from the client's side.
    Pow {
        #[command(subcommand)]
        action: PowCommand,
    },
    /// Run an attack drill on loopback and report what users and bots got: a table per
    /// traffic class, the defences' actions, a chart (PNG and SVG) and JSON, with the
    /// same traffic against Palisade with defences off and nginx rate limits.
    Drill(DrillArgs),
    /// Operate a running gateway through its admin API.
    Admin {
        #[command(flatten)]
        target: AdminTarget,
        #[command(subcommand)]
        action: AdminCommand,
    },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// A scenario file (see bench/scenarios/), or the name of a built-in one: `attack`
    /// (the default), `flash-crowd`, `account-farm` or `sms-pumping`.
    #[arg(default_value = "attack")]
    pub scenario: String,
    /// Where to write report.md, report.json and the charts.
    #[arg(long, default_value = "drill-report")]
    pub out: PathBuf,
    /// Which baselines to run besides Palisade (overrides the scenario's [baselines]).
    #[arg(long, value_enum)]
    pub baselines: Option<BaselineChoice>,
    /// Drill a gateway that is already running (its URL, on loopback) instead of
    /// starting one; needs --outbox to read verification codes. No baselines.
    #[arg(long, requires = "outbox")]
    pub target: Option<String>,
    /// The running gateway's outbox file (`<data_dir>/outbox.jsonl`).
    #[arg(long)]
    pub outbox: Option<PathBuf>,
    /// Print the scenario with every default filled in, and exit.
    #[arg(long)]
    pub show: bool,
    /// Start this many Palisade nodes sharing one Redis and one PostgreSQL, and spread
    /// the traffic over them as a round-robin balancer would (overrides the scenario's
    /// `gateway.nodes`). The baselines run on one node.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=drill::fleet::MAX_NODES as i64))]
    pub nodes: Option<u16>,
    /// The Redis the nodes share (default redis://127.0.0.1:6379); the drill uses a key
    /// prefix of its own and deletes its keys at the end.
    #[arg(long, env = "PALISADE_SHARED_STATE", value_name = "URL")]
    pub shared_state: Option<String>,
    /// A PostgreSQL server for the nodes (default postgres://postgres@127.0.0.1:5432/test): the
    /// drill creates a database of its own there, and drops it at the end.
    #[arg(long, env = "PALISADE_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BaselineChoice {
    /// Palisade only.
    None,
    /// Palisade with defences off.
    Off,
    /// nginx limit_req/limit_conn.
    Nginx,
    /// Both.
    All,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (TOML); the same one `serve` uses.
    #[arg(long, short, env = "PALISADE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the whole chain; name every edited, removed, inserted or reordered entry
    /// and every checkpoint that does not match. Exits 1 when the chain is broken.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the log as JSON lines (one entry each, in chain order, with its hashes),
    /// for a SIEM.
    Export {
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Only entries after this place in the chain.
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key (printed once). Without --user it belongs to the operator's service account.
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        #[arg(long)]
        user: Option<i64>,
        /// Space-separated scopes: inference, account.
        #[arg(long, default_value = "inference")]
        scopes: String,
        /// This key's own requests-per-minute budget.
        #[arg(long)]
        rpm: Option<u32>,
    },
    /// List every API key (prefixes only; secrets are never stored).
    List,
    /// Revoke an API key by its prefix (pal_xxxxxxxx).
    Revoke { prefix: String },
    /// Add a new personal-data encryption key and re-encrypt every stored field under it.
    Rotate,
}

#[derive(Debug, Args)]
pub struct AdminTarget {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Admin API base URL; default: http:// (https:// with [admin.tls]) + `admin.listen`.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// Operator token or bootstrap secret; default: the token `palisade admin login` saved
    /// in <data_dir>/operator.token, else `admin.token` from the configuration, else
    /// <data_dir>/admin.token.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// PEM file of the CA that issued the admin listener's certificate (https only).
    #[arg(long, global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for an admin listener that requires one.
    #[arg(long, global = true, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    #[arg(long, global = true, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Log in as an operator: the password is read from standard input, the code is the
    /// authenticator app's. The short-lived token is saved in <data_dir>/operator.token.
    Login {
        name: String,
        /// The current six-digit code from the authenticator app.
        #[arg(long)]
        code: String,
    },
    /// End the saved operator token, here and on the gateway.
    Logout,
    /// Who the token names, and their role.
    Whoami,
    /// Operator accounts: add, enroll, list, change a role, reset, disable.
    Operator {
        #[command(subcommand)]
        action: OperatorCommand,
    },
    /// Show or change the registration policy, live.
    Registration {
        #[command(subcommand)]
        policy: RegistrationCommand,
    },
    /// Create an invite code (for the invite-only policy).
    Invite,
    /// Remove a user's second factor (lost authenticator).
    MfaReset { user: i64 },
    /// Pin an account's trust tier (established, standard, recent, newcomer), or lift the pin.
    Tier {
        #[command(subcommand)]
        action: TierCommand,
    },
    /// Open, update, resolve or list incidents on the public status page.
    Incident {
        #[command(subcommand)]
        action: IncidentCommand,
    },
    /// Force a status-page component's status, or clear the override.
    Component {
        #[command(subcommand)]
        action: ComponentCommand,
    },
    /// Announce planned maintenance on the status page.
    Maintenance {
        #[command(subcommand)]
        action: MaintenanceCommand,
    },
    /// The block list: refuse addresses or networks with 403, live.
    Block {
        #[command(subcommand)]
        action: ListCommand,
    },
    /// The allow list: addresses or networks exempt from the block list and challenges.
    Allow {
        #[command(subcommand)]
        action: ListCommand,
    },
    /// Callers with strikes from the AI guard (flagged prompts, leaks, activity).
    Flags {
        #[command(subcommand)]
        action: Option<FlagsCommand>,
    },
    /// Force attack mode on or off, or hand it back to the detector.
    Attack {
        #[arg(value_enum)]
        mode: AttackArg,
    },
    /// Show recent audit-log entries.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only actions starting with this, e.g. `auth.`.
        #[arg(long)]
        action: Option<String>,
    },
}

const INCIDENT_STATUSES: [&str; 5] = ["investigating", "identified", "monitoring", "resolved", "postmortem"];
const IMPACTS: [&str; 4] = ["none", "minor", "major", "critical"];
const COMPONENT_STATUSES: [&str; 5] =
    ["operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"];

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Unresolved incidents and those of the last 90 days, newest first.
    List,
    /// Open an incident; it shows on the page at once.
    Open {
        /// Its title, e.g. "Slow chat replies".
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "minor", value_parser = IMPACTS)]
        impact: String,
        #[arg(long, default_value = "investigating", value_parser = INCIDENT_STATUSES)]
        status: String,
        /// An affected component id (web, api, login, registration, model-<upstream>); repeatable.
        #[arg(long = "component")]
        components: Vec<String>,
        /// The first update, as users will read it.
        #[arg(long)]
        message: String,
    },
    /// Post an update (and optionally rename it, change its impact or components).
    Update {
        id: i64,
        #[arg(long, value_parser = INCIDENT_STATUSES)]
        status: String,
        #[arg(long)]
        message: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = IMPACTS)]
        impact: Option<String>,
        /// Replace the affected components; repeatable.
        #[arg(long = "component")]
        components: Vec<String>,
    },
    /// Resolve an incident.
    Resolve {
        id: i64,
        #[arg(long, default_value = "This incident has been resolved.")]
        message: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ComponentCommand {
    /// Force component ID to STATUS until cleared, or `--clear` the override.
    Set {
        id: String,
        #[arg(required_unless_present = "clear", conflicts_with = "clear", value_parser = COMPONENT_STATUSES)]
        status: Option<String>,
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Announce a maintenance window (times in RFC 3339, e.g. 2025-06-01T02:00:00Z).
    Schedule {
        #[arg(long)]
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        until: String,
        /// An affected component id; repeatable.
        #[arg(long = "component")]
        components: Vec<String>,
        #[arg(long)]
        message: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PowCommand {
    /// Fetch a challenge from a gateway, solve it, and print the clearance token. Send it
    /// back as `X-Palisade-Clearance` with the same User-Agent, from the same network.
    Solve {
        #[command(flatten)]
        config: ConfigArg,
        /// Gateway base URL; default: http:// + the configured listen address.
        #[arg(long)]
        url: Option<String>,
        /// The User-Agent the clearance is bound to.
        #[arg(long, default_value = concat!("palisade-cli/", env!("CARGO_PKG_VERSION")))]
        user_agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Print them, most strikes first (the default).
    List,
    /// Forgive a caller's strikes (as listed: an account id or a subnet digest).
    Clear { caller: u64 },
    /// Clear an account's cohort flag (as listed under `cohorts`), restoring its tier.
    ClearCohort { user: i64 },
}

const ROLES: [&str; 3] = ["viewer", "operator", "admin"];

#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator (needs an admin, or the bootstrap secret); prints their one-time
    /// setup code.
    Add {
        name: String,
        #[arg(long, value_parser = ROLES)]
        role: String,
    },
    /// Enroll with a setup code: the new password is read from standard input; prints
    /// the authenticator secret (and an otpauth:// URI for a QR code).
    Enroll {
        name: String,
        #[arg(long)]
        setup_code: String,
    },
    /// Every operator, with role and state.
    List,
    /// Change an operator's role.
    Role {
        name: String,
        #[arg(value_parser = ROLES)]
        role: String,
    },
    /// A new setup code for an operator who lost their password or authenticator; their
    /// old ones and their tokens stop working.
    Reset { name: String },
    /// Disable an operator; their tokens stop working at once.
    Disable { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TierCommand {
    /// Pin the account to a tier, whatever its history says.
    Pin {
        user: i64,
        #[arg(value_parser = ["established", "standard", "recent", "newcomer"])]
        tier: String,
    },
    /// Lift the pin: the tier follows the account's age and use again.
    Lift { user: i64 },
}

#[derive(Debug, Subcommand)]
pub enum ListCommand {
    /// Add (or replace) an entry: an address or a CIDR network, IPv4 or IPv6.
    Add {
        cidr: String,
        /// Lifetime, e.g. 90s, 30m, 1h, 7d; default: until removed.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Why (kept with the entry, at most 256 bytes).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Remove exactly this entry.
    Remove { cidr: String },
    /// Print the live entries.
    List,
}

/// `90`, `90s`, `30m`, `1h`, `7d` → seconds.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a duration like 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    n.checked_mul(scale).filter(|s| *s > 0).ok_or_else(|| format!("`{text}` must be between 1s and a few centuries"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttackArg {
    /// Force attack mode on.
    On,
    /// Force it off.
    Off,
    /// Let the detector decide.
    Auto,
    /// Print the mode, the switch and the detector's rates.
    Show,
}

#[derive(Debug, Subcommand)]
pub enum RegistrationCommand {
    /// Print the current policy.
    Show,
    /// Anyone may register.
    Open,
    /// Only phone numbers from these regions (ISO 3166 codes, e.g. CN).
    Regions {
        #[arg(required = true)]
        regions: Vec<String>,
        /// Said to refused visitors after the rule, and on the status page.
        #[arg(long)]
        message: Option<String>,
    },
    /// Only with an invite code.
    InviteOnly {
        /// Said to refused visitors after the rule, and on the status page.
        #[arg(long)]
        message: Option<String>,
    },
    /// Nobody may register; existing users still log in.
    Closed {
        /// Said to refused visitors instead of the default, and on the status page.
        #[arg(long, default_value = "Registration is temporarily closed.")]
        message: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file (with PALISADE_* overrides applied) and name every bad field.
    Check { file: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see palisade.example.toml.
    #[arg(long, short, env = "PALISADE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on; overrides the file and PALISADE_LISTEN.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Log format; overrides `log.format`.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Requests generated at once.
    #[arg(long, default_value_t = 64)]
    pub capacity: usize,
    /// Requests that may wait for a slot (default: same as capacity).
    #[arg(long)]
    pub queue: Option<usize>,
    /// How long a queued request waits before a 503.
    #[arg(long, default_value_t = 5_000)]
    pub queue_timeout_ms: u64,
    /// Time to first token.
    #[arg(long, default_value_t = 50)]
    pub ttft_ms: u64,
    /// Tokens generated per second per request (0: no delay).
    #[arg(long, default_value_t = 200)]
    pub tokens_per_s: u32,
    /// Reply length when a request sets no max_tokens.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Seed of the deterministic replies.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Model id to report.
    #[arg(long, default_value = "palisade-sim")]
    pub model: String,
    /// Reply with the request's system prompt (to exercise leak guards).
    #[arg(long)]
    pub echo_system_prompt: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}
