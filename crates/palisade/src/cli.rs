//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "palisade",
    version,
    about = "The front door for AI assistant services",
    propagate_version = true
)]
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
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file (with PALISADE_* overrides applied) and name every bad field.
    Check { file: PathBuf },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize, Default,
)]
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
