//! The `palisade` binary's library half: command line, configuration loading,
//! and the wiring that turns a [`config::Config`] into running services.

mod admin_client;
mod audit;
pub mod cli;
pub mod config;
mod drill;
mod keys;
mod logging;
mod pow;
mod serve;

use std::process::ExitCode;

use cli::{Cli, Command, ConfigCommand};

/// Run one command line to completion.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::SimUpstream(args) => serve::sim_upstream(args),
        Command::Config { action: ConfigCommand::Check { file } } => Ok(config::check_command(&file)),
        Command::Keys { config, action } => keys::run(config.config.as_deref(), action),
        Command::Audit { config, action } => audit::run(config.config.as_deref(), action),
        Command::Admin { target, action } => admin_client::run(target, action),
        Command::Pow { action } => pow::run(action),
        Command::Drill(args) => drill::run(args),
    }
}
