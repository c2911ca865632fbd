//! `palisade drill`: runs a scenario against Palisade and its baselines, then writes
//! the report (Markdown, JSON) and one chart per target. Exit status 0 when every
//! target of the scenario was met, 1 when one was not. With `--nodes N` Palisade runs as
//! N nodes on one Redis and one PostgreSQL (see `drill::fleet`).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use drill::fleet::FleetOptions;
use drill::run::{Options, TargetKind};
use drill::scenario::Scenario;

use crate::cli::{BaselineChoice, DrillArgs};
use crate::serve::runtime;

pub fn run(args: DrillArgs) -> anyhow::Result<ExitCode> {
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(n) = args.nodes {
        scenario.gateway.nodes = usize::from(n);
    }
    if args.show {
        print!("{}", toml::to_string_pretty(&scenario).context("cannot print the scenario")?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(target) = &args.target {
        let host = target.trim_start_matches("http://").split(['/', ':']).next().unwrap_or("");
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        anyhow::ensure!(loopback, "--target must be a gateway on loopback (http://127.x.y.z:port), not {target}");
        anyhow::ensure!(
            scenario.gateway.nodes == 1,
            "--target drills one gateway someone else started; --nodes (or gateway.nodes) starts its own"
        );
    }
    let (off, nginx) = match (args.target.is_some(), args.baselines) {
        (true, _) => (false, false),
        (false, None) => (scenario.baselines.defences_off, scenario.baselines.nginx),
        (false, Some(BaselineChoice::None)) => (false, false),
        (false, Some(BaselineChoice::Off)) => (true, false),
        (false, Some(BaselineChoice::Nginx)) => (false, true),
        (false, Some(BaselineChoice::All)) => (true, true),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let out = args.out.canonicalize()?;
    let opts = Options {
        palisade: std::env::current_exe().context("cannot find the palisade binary")?,
        work_dir: out.join("work"),
        external: args.target.clone().zip(args.outbox.clone()),
        progress: std::io::stderr().is_terminal(),
        fleet: FleetOptions {
            nodes: scenario.gateway.nodes,
            shared_state: args.shared_state.clone(),
            database_url: args.database_url.clone(),
        },
    };
    let fds = drill::run::raise_fd_limit();
    let mut kinds = vec![if args.target.is_some() { TargetKind::External } else { TargetKind::Palisade }];
    if off {
        kinds.push(TargetKind::DefencesOff);
    }
    if nginx {
        kinds.push(TargetKind::Nginx);
    }
    let seconds = scenario.total_seconds();
    let nodes = scenario.gateway.nodes;
    eprintln!(
        "drill {:?}: {} phase(s), {seconds:.0} s per target, against: {} (file descriptors: {fds})",
        scenario.name,
        scenario.phases.len(),
        kinds
            .iter()
            .map(|k| match k {
                TargetKind::Palisade if nodes > 1 => format!("{} ({nodes} nodes)", k.label()),
                _ => k.label().to_owned(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    );
    let rt = runtime()?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for kind in kinds {
        eprintln!("→ {}", kind.label());
        // The gateway and nginx run in process groups of their own, out of reach of the
        // terminal's Ctrl-C: on a signal the run is dropped, which stops them.
        let interruptible = async {
            tokio::select! {
                result = drill::run::run(&scenario, kind, &opts) => Some(result),
                () = crate::serve::shutdown_signal() => None,
            }
        };
        let Some(result) = rt.block_on(interruptible) else {
            let _ = std::fs::remove_dir_all(out.join("work"));
            anyhow::bail!("interrupted; every process the drill started is stopped");
        };
        match result {
            Ok(data) => runs.push(data),
            Err(drill::run::RunError::NoNginx(why)) if kind == TargetKind::Nginx => {
                eprintln!("  skipped: nginx is not available ({why})");
                skipped.push((kind.label().to_owned(), why));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("the run against {} failed", kind.label()))),
        }
    }
    let report = drill::report::build(&scenario, &runs, skipped);
    let mut text = drill::report::render(&report);
    let mut charts = Vec::new();
    for (data, run) in runs.iter().zip(&report.runs) {
        let name = match data.kind {
            TargetKind::Palisade | TargetKind::External => "chart",
            TargetKind::DefencesOff => "chart-defences-off",
            TargetKind::Nginx => "chart-nginx",
        };
        let (png, svg) = (out.join(format!("{name}.png")), out.join(format!("{name}.svg")));
        drill::chart::render(&drill::report::chart_input(&scenario, data, run), &png, &svg)?;
        charts.push(format!("{} ({})", png.display(), data.kind.label()));
    }
    text.push_str(&format!("\nCharts: {}\n", charts.join(", ")));
    std::fs::write(out.join("report.md"), &text)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    println!("{text}");
    eprintln!("report: {}/report.md, {}/report.json", out.display(), out.display());
    let _ = std::fs::remove_dir_all(out.join("work"));
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
