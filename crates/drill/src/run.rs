//! Running a scenario against one target: start what it needs (the simulated model in
//! this process, the gateway as a child process, nginx for the baseline), sign the
//! members up, play the phases, sample the gateway's metrics once a second, and hand
//! back everything the report is made of. With several nodes, each is a `palisade
//! serve` of its own on the run's Redis prefix and database (see [`crate::fleet`]), and
//! clients are dealt over them. Every child process runs in its own process group,
//! stopped with all it started when its handle drops, so nothing outlives the drill.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;

use crate::farm::FarmSetup;
use crate::fleet::{FleetError, FleetOptions, LimitProbe, SharedBacking, node_of};
use crate::load::send;
use crate::scenario::{BotKind, Scenario};
use crate::sim::{SimConfig, SimStats, Usage};
use crate::traffic::{self, Browser, Identifier, Outbox, Outcome, Recorder, SignUpCounts, SignUpTally, Solver};

/// What the traffic is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// Palisade with the scenario's settings: every defence on.
    Palisade,
    /// Palisade as a plain proxy: edge guard, admission, and the texts' breaker and
    /// budgets off.
    DefencesOff,
    /// nginx `limit_req`/`limit_conn` in front of the plain proxy.
    Nginx,
    /// A gateway someone else started (`--target`).
    External,
}

impl TargetKind {
    pub fn label(self) -> &'static str {
        match self {
            TargetKind::Palisade => "palisade",
            TargetKind::DefencesOff => "palisade, defences off",
            TargetKind::Nginx => "nginx limit_req + limit_conn",
            TargetKind::External => "external gateway",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} did not become ready within {secs} s{}", .log.as_ref().map(|l| format!("; its log: {l}")).unwrap_or_default())]
    NotReady { what: String, secs: u64, log: Option<String> },
    #[error("setting up member {index} failed: {message}")]
    Member { index: usize, message: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("nginx is not available: {0}")]
    NoNginx(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// How to reach or start the gateway.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `palisade` binary (the drill starts `palisade serve` from it).
    pub palisade: PathBuf,
    /// Where logs and data of started processes go.
    pub work_dir: PathBuf,
    /// `--target`: send traffic here instead of starting a gateway.
    pub external: Option<(String, PathBuf)>,
    /// Show a live progress bar.
    pub progress: bool,
    /// How many Palisade nodes (baselines always run one), and their shared state.
    pub fleet: FleetOptions,
}

pub use crate::load::Metrics;

/// Everything one run produced.
pub struct RunData {
    pub kind: TargetKind,
    pub classes: Vec<String>,
    pub events: Vec<traffic::Event>,
    /// (seconds since the first phase, metrics) about once a second; empty for nginx-only data.
    pub metrics: Vec<(f64, Metrics)>,
    /// (seconds, model usage by `user` label) about once a second.
    pub usage: Vec<(f64, BTreeMap<String, Usage>)>,
    /// Seconds the member sign-ups took before the first phase.
    pub setup_s: f64,
    /// Whether the drill owns the upstream (so model usage is known).
    pub owns_upstream: bool,
    pub solved_challenges: usize,
    /// The nodes' URLs, when there is more than one.
    pub nodes: Vec<String>,
    /// Each node's own metric samples (`metrics` holds their sum), when there is more
    /// than one.
    pub node_metrics: Vec<Vec<(f64, Metrics)>>,
    /// The cross-node limit probe, run when there is more than one node; the error says
    /// why it could not measure.
    pub limit_probe: Option<Result<LimitProbe, String>>,
    /// How far the newcomers' sign-ups got, when the scenario has newcomers.
    pub newcomer_sign_ups: Option<SignUpTally>,
    /// The account farm's sign-ups, when the scenario has one.
    pub farm: Option<FarmSetup>,
}

/// A child process in a process group of its own, stopped with everything it started
/// when dropped: first asked with `stop` (nginx's graceful stop is `SIGQUIT`, after
/// which its master stops its workers), then, after at most [`STOP_GRACE`], the whole
/// group is killed. Killing only the master would leave nginx's workers running.
struct Proc {
    child: Child,
    stop: libc::c_int,
}

/// How long a child has to stop by itself.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Proc {
    /// Spawn `command` as the leader of a new process group.
    fn spawn(command: &mut Command, stop: libc::c_int) -> std::io::Result<Proc> {
        use std::os::unix::process::CommandExt;
        Ok(Proc { child: command.process_group(0).spawn()?, stop })
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Ok(group) = libc::pid_t::try_from(self.child.id()) else { return };
        // SAFETY: `kill` only sends a signal, to our own child, which is not reaped yet
        // (so its id cannot have been reused).
        if self.stop != libc::SIGKILL {
            unsafe { libc::kill(group, self.stop) };
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while std::time::Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SAFETY: as above; the group's id stays reserved while any member of it lives,
        // and it is signalled right after its leader ended.
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Thousands of bot connections need more descriptors than a shell's default 1024;
/// raise the soft limit to the hard one (children inherit it). The new soft limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(1 << 20).unwrap_or(1024)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(url: &str, what: &str, proc: Option<&mut Proc>, log: Option<&Path>) -> Result<(), RunError> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut proc = proc;
    while Instant::now() < deadline {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if let Some(p) = proc.as_mut()
            && let Ok(Some(status)) = p.child.try_wait()
        {
            let log = log.and_then(|l| std::fs::read_to_string(l).ok()).map(|t| tail(&t, 800));
            return Err(RunError::NotReady { what: format!("{what} (exited: {status})"), secs: 0, log });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = log.and_then(|l| std::fs::read_to_string(l).ok()).map(|t| tail(&t, 800));
    Err(RunError::NotReady { what: what.to_owned(), secs: 30, log })
}

fn tail(text: &str, n: usize) -> String {
    let start = text.len().saturating_sub(n);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].trim().to_owned()
}

/// Parses Prometheus text into `name{labels}` → value.
pub fn parse_metrics(text: &str) -> Metrics {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One node of several: the state they share, and which one this is (from 0).
struct FleetNode<'a> {
    backing: &'a SharedBacking,
    nodes: usize,
    index: usize,
}

/// A started `palisade serve`, not yet known to be ready.
struct Started {
    proc: Proc,
    port: u16,
    /// The admin API's own port.
    admin_port: u16,
    log: PathBuf,
    data: PathBuf,
}

/// The admin token of the gateways this drill starts (random per run).
fn admin_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        use std::hash::{BuildHasher, RandomState};
        let words: Vec<String> = (0..4u64).map(|i| format!("{:016x}", RandomState::new().hash_one(i))).collect();
        format!("drill-{}", words.concat())
    })
}

/// The drill's members stand for existing users with weeks of ordinary use, which a
/// drill cannot wait for: accounts created seconds before an attack are exactly what
/// the trust tiers put below newcomers. So the operator pins them established, as
/// `palisade admin tier pin` would (a gateway started elsewhere, `--target`, is left
/// as it is).
async fn pin_established(base: &str, members: &[i64], timeout: Duration) -> Result<(), RunError> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| RunError::Member { index: 0, message: format!("an HTTP client for the admin API: {e}") })?;
    for (index, id) in members.iter().enumerate() {
        let answer = http
            .put(format!("{base}/admin/users/{id}/tier"))
            .bearer_auth(admin_token())
            .json(&json!({"tier": "established"}))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let message = format!("pinning its tier answered {}", r.status());
                return Err(RunError::Member { index, message });
            }
            Err(e) => return Err(RunError::Member { index, message: format!("pinning its tier: {e}") }),
        }
    }
    Ok(())
}

/// A count no drill reaches, for limits the baselines switch off (fits a `u32`).
const UNLIMITED: &str = "1000000000";

fn start_gateway(
    opts: &Options,
    scenario: &Scenario,
    kind: TargetKind,
    sim: SocketAddr,
    dir: &Path,
    node: Option<FleetNode>,
) -> Result<Started, RunError> {
    let port = free_port()?;
    let admin_port = free_port()?;
    let (log, data) = match &node {
        None => (dir.join("palisade.log"), dir.join("data")),
        Some(n) => (dir.join(format!("node-{}.log", n.index + 1)), dir.join(format!("node-{}", n.index + 1))),
    };
    let mut command = Command::new(&opts.palisade);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("PALISADE_UPSTREAMS", format!("[{{name=\"sim\", url=\"http://{sim}\"}}]"))
        .env("PALISADE_DATA_DIR", &data)
        .env("PALISADE_LOG__LEVEL", "warn")
        .env("PALISADE_ADMIN__TOKEN", admin_token())
        .env("PALISADE_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}"))
        // The drill reads these for its fleet; a single node keeps its state to itself.
        .env_remove("PALISADE_SHARED_STATE")
        .env_remove("PALISADE_DATABASE_URL");
    for (k, v) in &scenario.gateway.env {
        command.env(k, v);
    }
    if let Some(n) = &node {
        // Node 1 writes the shield and personal-data keys where every node reads them:
        // a fleet must sign and index with one key (docs/multi-node.md).
        command
            .env("PALISADE_SHARED_STATE", &n.backing.redis_url)
            .env("PALISADE_DATABASE_URL", &n.backing.database_url)
            .env("PALISADE_FLEET__NODES", n.nodes.to_string())
            .env("PALISADE_FLEET__KEY_PREFIX", &n.backing.prefix)
            .env("PALISADE_SHIELD__SECRET_FILE", dir.join("shield.key"))
            .env("PALISADE_PII__KEY_FILE", dir.join("pii.key"));
    }
    match kind {
        TargetKind::DefencesOff | TargetKind::Nginx => {
            command
                .env("PALISADE_SHIELD__ENABLED", "false")
                .env("PALISADE_ADMISSION__ENABLED", "false")
                .env("PALISADE_SERVER__MAX_CONNECTIONS_PER_ADDRESS", "1000000")
                .env("PALISADE_SERVER__MAX_CONNECTIONS", "1000000")
                // Texts too: no breaker (it never judges a range) and no budgets per
                // country or range.
                .env("PALISADE_ACCOUNTS__SMS_BREAKER_MIN_SENDS", UNLIMITED)
                .env("PALISADE_ACCOUNTS__SMS_PER_PREFIX_PER_HOUR", UNLIMITED)
                .env("PALISADE_ACCOUNTS__SMS_PER_COUNTRY_PER_HOUR", UNLIMITED);
            if kind == TargetKind::Nginx {
                command.env("PALISADE_SHIELD__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]");
            }
        }
        TargetKind::Palisade | TargetKind::External => {}
    }
    let file = std::fs::File::create(&log)?;
    command.stdout(Stdio::null()).stderr(file);
    let proc = Proc::spawn(&mut command, libc::SIGKILL)
        .map_err(|source| RunError::Spawn { what: format!("{}", opts.palisade.display()), source })?;
    Ok(Started { proc, port, admin_port, log, data })
}

/// nginx from PATH or /usr/sbin; installed with apt-get when missing and allowed.
pub fn find_nginx(install: bool) -> Result<PathBuf, RunError> {
    let found = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .chain([PathBuf::from("/usr/sbin")])
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    };
    if let Some(path) = found() {
        return Ok(path);
    }
    if !install {
        return Err(RunError::NoNginx("not installed (apt-get install -y nginx-light)".into()));
    }
    eprintln!("nginx is missing; installing it with `apt-get install -y nginx-light` for the baseline");
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "nginx-light"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => found().ok_or_else(|| RunError::NoNginx("apt-get installed no nginx binary".into())),
        Ok(s) => Err(RunError::NoNginx(format!("apt-get install -y nginx-light failed ({s})"))),
        Err(e) => Err(RunError::NoNginx(format!("cannot run apt-get: {e}"))),
    }
}

fn nginx_conf(scenario: &Scenario, dir: &Path, port: u16, app: u16) -> String {
    let b = &scenario.baselines;
    let d = dir.display();
    // What an operator would put in front of an app: per-address request rate and
    // connection caps, short header and body timeouts against slowloris.
    format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         fastcgi_temp_path {d}/nginx-fcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
         client_header_timeout 10s;\n  client_body_timeout 10s;\n  keepalive_requests 100000;\n\
         limit_req_zone $binary_remote_addr zone=perip:16m rate={rate}r/s;\n\
         limit_conn_zone $binary_remote_addr zone=conns:16m;\n  limit_req_status 429;\n  limit_conn_status 429;\n\
         upstream app {{ server 127.0.0.1:{app}; keepalive 256; }}\n\
         server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n\
         limit_req zone=perip burst={burst} nodelay;\n      limit_conn conns {conns};\n\
         proxy_pass http://app;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_set_header X-Forwarded-For $remote_addr;\n      proxy_buffering off;\n      proxy_read_timeout 60s;\n\
         }}\n  }}\n}}\n",
        rate = b.nginx_rate_per_s.max(1),
        burst = b.nginx_burst,
        conns = b.nginx_conn_per_ip.max(1),
    )
}

/// Runs the scenario against one kind of target.
pub async fn run(scenario: &Scenario, kind: TargetKind, opts: &Options) -> Result<RunData, RunError> {
    let dir = opts.work_dir.join(kind.label().replace([' ', ',', '+'], "-").replace("--", "-"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    // The model, in this process so its usage by `user` label can be read.
    let u = &scenario.upstream;
    let sim_cfg = SimConfig {
        capacity: u.capacity,
        queue: u.queue,
        queue_timeout: Duration::from_secs(30),
        ttft: Duration::from_millis(u.ttft_ms),
        tokens_per_s: u.tokens_per_s,
        ..SimConfig::default()
    };
    let (sim_router, sim_stats) = crate::sim::router(sim_cfg);
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_addr = sim_listener.local_addr()?;
    let (sim_stop, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let sim_task = tokio::spawn(async move {
        let _ = axum::serve(sim_listener, sim_router)
            .with_graceful_shutdown(async {
                let _ = sim_stopped.await;
            })
            .await;
    });

    // Declared before the processes, so it is dropped after them: the database goes
    // once no node uses it.
    let mut backing = None;
    let mut procs = Vec::new();
    // The first gateway's admin API, where the operator pins the members' tier.
    let mut admin_base = None;
    let (bases, metrics_urls, outboxes) = match (&opts.external, kind) {
        (Some((url, outbox)), _) => (vec![url.trim_end_matches('/').to_owned()], Vec::new(), vec![outbox.clone()]),
        (None, TargetKind::Palisade) if opts.fleet.nodes > 1 => {
            let shared = backing.insert(SharedBacking::prepare(&opts.fleet).await?);
            let (mut bases, mut metrics, mut outboxes) = (Vec::new(), Vec::new(), Vec::new());
            // One after the other: the first creates the schema and the shared keys.
            for index in 0..opts.fleet.nodes {
                let node = FleetNode { backing: shared, nodes: opts.fleet.nodes, index };
                let mut gw = start_gateway(opts, scenario, kind, sim_addr, &dir, Some(node))?;
                let url = format!("http://127.0.0.1:{}", gw.port);
                admin_base.get_or_insert_with(|| format!("http://127.0.0.1:{}", gw.admin_port));
                let what = format!("palisade serve (node {} of {})", index + 1, opts.fleet.nodes);
                wait_ready(&format!("{url}/readyz"), &what, Some(&mut gw.proc), Some(&gw.log)).await?;
                procs.push(gw.proc);
                metrics.push(format!("{url}/metrics"));
                outboxes.push(gw.data.join("outbox.jsonl"));
                bases.push(url);
            }
            (bases, metrics, outboxes)
        }
        (None, kind) => {
            let Started { proc: mut gw, port, admin_port, log, data } =
                start_gateway(opts, scenario, kind, sim_addr, &dir, None)?;
            let url = format!("http://127.0.0.1:{port}");
            admin_base = Some(format!("http://127.0.0.1:{admin_port}"));
            wait_ready(&format!("{url}/readyz"), "palisade serve", Some(&mut gw), Some(&log)).await?;
            procs.push(gw);
            let outbox = data.join("outbox.jsonl");
            if kind == TargetKind::Nginx {
                let nginx = find_nginx(true)?;
                let front = free_port()?;
                let conf = dir.join("nginx.conf");
                std::fs::write(&conf, nginx_conf(scenario, &dir, front, port))?;
                let mut command = Command::new(&nginx);
                command.arg("-p").arg(&dir).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null());
                let mut p = Proc::spawn(&mut command, libc::SIGQUIT)
                    .map_err(|source| RunError::Spawn { what: "nginx".into(), source })?;
                let front_url = format!("http://127.0.0.1:{front}");
                wait_ready(&format!("{front_url}/healthz"), "nginx", Some(&mut p), Some(&dir.join("nginx-error.log")))
                    .await?;
                procs.push(p);
                (vec![front_url], vec![format!("{url}/metrics")], vec![outbox])
            } else {
                (vec![url.clone()], vec![format!("{url}/metrics")], vec![outbox])
            }
        }
    };

    let targets = Targets { bases: &bases, admin: admin_base.as_deref() };
    let data = play(scenario, kind, targets, metrics_urls, Outbox::new(outboxes), &sim_stats, opts).await;
    drop(procs);
    drop(backing);
    let _ = sim_stop.send(());
    let _ = sim_task.await;
    let mut data = data?;
    data.owns_upstream = opts.external.is_none();
    Ok(data)
}

/// The people's classes; every other class is a kind of bot.
pub const MEMBERS_CLASS: &str = "logged-in users";
pub const LOGINS_CLASS: &str = "member logins";
pub const NEWCOMERS_CLASS: &str = "newcomers";
/// The `user` labels people's chat requests carry; every other label is a bot's.
pub const MEMBERS_LABEL: &str = "drill-members";
pub const NEWCOMERS_LABEL: &str = "drill-newcomers";
/// The account farm's label: a bot's, reported on its own.
pub const FARM_LABEL: &str = "drill-farm";

pub fn is_bot_class(class: &str) -> bool {
    !matches!(class, MEMBERS_CLASS | LOGINS_CLASS | NEWCOMERS_CLASS)
}

/// The classes of a scenario, in report order, and the index of each bot spec's class.
pub fn classes(scenario: &Scenario) -> (Vec<String>, Vec<usize>) {
    let mut classes = vec![MEMBERS_CLASS.to_owned(), LOGINS_CLASS.to_owned()];
    if scenario.newcomers.is_some() {
        classes.push(NEWCOMERS_CLASS.to_owned());
    }
    let mut bot_class = Vec::new();
    for bot in &scenario.bots {
        let label = bot.kind.label().to_owned();
        let i = classes.iter().position(|c| *c == label).unwrap_or_else(|| {
            classes.push(label);
            classes.len() - 1
        });
        bot_class.push(i);
    }
    (classes, bot_class)
}

const MEMBERS: usize = 0;
const LOGINS: usize = 1;
const NEWCOMERS: usize = 2;

/// The longest the account farm's sign-ups may take.
const FARM_SIGN_UP_LIMIT: Duration = Duration::from_secs(300);

/// Bots of spec `b` send from 127.<this>.0.0 up.
fn bot_second(b: usize) -> u8 {
    100u8.wrapping_add(20u8.wrapping_mul(b as u8))
}

/// Plays the scenario against `bases` (one URL per node), reading `metrics_urls` (one
/// per node, none for an external gateway).
/// Where the drill's clients go: each node's public address, and the first node's
/// admin API (none for a gateway started elsewhere).
#[derive(Clone, Copy)]
struct Targets<'a> {
    bases: &'a [String],
    admin: Option<&'a str>,
}

async fn play(
    scenario: &Scenario,
    kind: TargetKind,
    targets: Targets<'_>,
    metrics_urls: Vec<String>,
    outbox: Outbox,
    sim: &Arc<SimStats>,
    opts: &Options,
) -> Result<RunData, RunError> {
    let Targets { bases, admin: admin_base } = targets;
    let timeout = Duration::from_secs_f64(scenario.limits.request_timeout_s);
    let total = scenario.total_seconds();
    let outbox = Arc::new(outbox);
    // Browsers solve challenges on their users' machines; here they share ours, so
    // one solver thread for people and one for bots keep most of the CPU the
    // gateway's, and bots' backlog never delays people.
    let solver = Arc::new(Solver::new(1));
    let bot_solver = Arc::new(Solver::new(1));
    let n_nodes = bases.len().max(1);

    // Members: one /24 each (127.1.x.1, 127.2.x.1, ...), signed up before the clock
    // starts, each on its node for the whole drill.
    let setup_started = Instant::now();
    let setup_deadline = setup_started + Duration::from_secs(120);
    let member_node = {
        let count = scenario.members.count;
        move |i: usize| node_of(i, count, n_nodes)
    };
    let members: Vec<Arc<Browser>> = (0..scenario.members.count)
        .map(|i| {
            let source = IpAddr::V4(Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 1));
            Arc::new(Browser::new(source, &bases[member_node(i)], timeout))
        })
        .collect();
    let results: Vec<(usize, Result<(i64, String), traffic::StepFailed>)> =
        futures_util::stream::iter(members.iter().cloned().enumerate())
            .map(|(i, b)| {
                let (solver, outbox) = (solver.clone(), outbox.clone());
                async move {
                    let who = Identifier::Email(traffic::member_email(i));
                    let password = traffic::member_password(i);
                    (i, b.sign_up(&solver, &outbox, &who, &password, setup_deadline, None).await)
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
    let mut member_ids = Vec::with_capacity(results.len());
    for (index, result) in results {
        match result {
            Ok((id, _)) => member_ids.push(id),
            Err(message) => return Err(RunError::Member { index, message: message.to_string() }),
        }
    }
    if let Some(admin_base) = admin_base {
        pin_established(admin_base, &member_ids, timeout).await?;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    if !opts.progress {
        eprintln!("  {} members signed up and logged in in {setup_s:.1} s", members.len());
    }
    let limit_probe = if bases.len() > 1 {
        let probe = crate::fleet::limit_probe(bases, &solver, &outbox, timeout).await;
        match &probe {
            Ok(p) => eprintln!(
                "  limit probe: a key limited to {}/min got {} of {} requests through {} nodes ({:?} per node)",
                p.limit_per_minute,
                p.admitted_total(),
                p.sent,
                bases.len(),
                p.admitted
            ),
            Err(why) => eprintln!("  limit probe: not measured: {why}"),
        }
        Some(probe)
    } else {
        None
    };

    // The account farm signs up last, just before the clock starts: accounts made
    // moments before the attack, verified like anyone else.
    let farm_spec = scenario.bots.iter().enumerate().find(|(_, b)| b.kind == BotKind::AccountFarm);
    let farm = match farm_spec {
        Some((b, spec)) => {
            let deadline = Instant::now() + FARM_SIGN_UP_LIMIT;
            let farm = crate::farm::sign_up(spec, bot_second(b), bases, &bot_solver, &outbox, timeout, deadline).await;
            let s = &farm.setup;
            eprintln!(
                "  account farm: {} of {} accounts signed up and logged in in {:.1} s",
                s.signed_up, s.accounts, s.seconds
            );
            Some(farm)
        }
        None => None,
    };

    let (class_names, bot_class) = classes(scenario);
    let epoch = Instant::now();
    let recorder = Arc::new(Recorder::new(class_names.clone(), epoch, scenario.limits.max_requests));
    let max_in_flight = scenario.limits.max_in_flight;
    let all = vec![(0.0, total)];
    let mut tasks = tokio::task::JoinSet::new();

    // Logged-in users chat; now and then one logs in again.
    let chat_rate = scenario.members.chat_load * scenario.upstream.capacity_rps();
    if !members.is_empty() {
        let (r, m) = (recorder.clone(), members.clone());
        let body = traffic::chat_body(MEMBERS_LABEL, scenario.upstream.max_tokens, "What is a good name for a cat?");
        tasks.spawn(traffic::schedule(recorder.clone(), MEMBERS, chat_rate, all.clone(), max_in_flight, move |n| {
            let i = n % m.len();
            let (r, b, body, node) = (r.clone(), m[i].clone(), body.clone(), member_node(i));
            async move {
                let at = r.now();
                let status = b.chat(&body).await;
                r.record(MEMBERS, node, at, status, Outcome::of_status(status));
            }
        }));
        let (r, s, bases) = (recorder.clone(), solver.clone(), bases.to_vec());
        let count = members.len();
        let rate = scenario.members.logins_per_s;
        tasks.spawn(traffic::schedule(recorder.clone(), LOGINS, rate, all.clone(), max_in_flight, move |n| {
            let (r, s) = (r.clone(), s.clone());
            let i = n % count;
            // A second device is a new connection: the balancer's next node.
            let node = node_of(n, count, n_nodes);
            let base = bases[node].clone();
            async move {
                let at = r.now();
                // A second device: same network, fresh browser.
                let source = IpAddr::V4(Ipv4Addr::new(127, 1 + (i / 250) as u8, (i % 250) as u8, 2));
                let device = Browser::new(source, &base, timeout);
                let deadline = Instant::now() + timeout;
                let who = Identifier::Email(traffic::member_email(i));
                let result = device.log_in(&s, &who, &traffic::member_password(i), deadline).await;
                let status = result.map_or_else(|e| e.status, |_| 200);
                r.record(LOGINS, node, at, status, Outcome::of_status(status));
            }
        }));
    }

    // Newcomers: arrive evenly over their phase, each one a whole journey.
    let newcomer_counts = Arc::new(SignUpCounts::default());
    if let Some(n) = &scenario.newcomers {
        let phase = scenario.phase(&n.arrive_in).unwrap_or(0);
        let window = scenario.window(phase);
        let rate = n.count as f64 / (window.1 - window.0);
        let journey_end = epoch + Duration::from_secs_f64(total + scenario.limits.drain_s);
        let (r, s, o) = (recorder.clone(), solver.clone(), outbox.clone());
        let subnets = n.subnets;
        let bases = bases.to_vec();
        let body = traffic::chat_body(NEWCOMERS_LABEL, scenario.upstream.max_tokens, "Hello! What can you do?");
        let count = n.count;
        let phones = n.phones.clone();
        let counts = newcomer_counts.clone();
        tasks.spawn(traffic::schedule(recorder.clone(), NEWCOMERS, rate, vec![window], count.max(1), move |j| {
            let (r, s, o, body, counts) = (r.clone(), s.clone(), o.clone(), body.clone(), counts.clone());
            let node = node_of(j, subnets, n_nodes);
            let browser = Browser::new(traffic::address(60, subnets, j), &bases[node], timeout);
            let who = if phones.is_empty() {
                Identifier::Email(format!("newcomer{j}@drill.example"))
            } else {
                Identifier::Phone(crate::phones::nth(&phones, j as u64))
            };
            async move {
                if j >= count {
                    return;
                }
                let at = r.now();
                counts.started.fetch_add(1, Ordering::Relaxed);
                let password = traffic::member_password(100_000 + j);
                let status = match browser.sign_up(&s, &o, &who, &password, journey_end, Some(&counts)).await {
                    Ok(_) => {
                        // The first question; a busy model is retried as a person would.
                        let mut status = browser.chat(&body).await;
                        while matches!(status, 429 | 503) && Instant::now() + Duration::from_secs(1) < journey_end {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            status = browser.chat(&body).await;
                        }
                        status
                    }
                    Err(e) => e.status,
                };
                r.record(NEWCOMERS, node, at, status, Outcome::of_status(status));
            }
        }));
    }

    // Bots.
    let noise = Arc::new(traffic::Noise::new(0x5eed));
    for (b, bot) in scenario.bots.iter().enumerate() {
        let class = bot_class[b];
        let windows: Vec<(f64, f64)> = scenario.bot_phases(bot).into_iter().map(|p| scenario.window(p)).collect();
        let second = bot_second(b);
        let sources: Vec<IpAddr> = (0..bot.sources).map(|i| traffic::address(second, bot.subnets, i)).collect();
        // Each source stays on one node; a subnet's sources are spread over all of them.
        let source_node = {
            let subnets = bot.subnets;
            move |k: usize| node_of(k, subnets, n_nodes)
        };
        let r = recorder.clone();
        match bot.kind {
            BotKind::AccountFarm => {
                let Some(farm) = &farm else { continue };
                // One prompt for every account, as a farm script sends.
                let body =
                    traffic::chat_body(FARM_LABEL, scenario.upstream.max_tokens, "Summarise this article for me");
                let max_retry_after = Duration::from_secs_f64(bot.max_retry_after_s);
                for (account, node) in &farm.accounts {
                    for _ in 0..bot.in_flight_per_account {
                        tasks.spawn(crate::farm::keep_in_flight(
                            r.clone(),
                            class,
                            account.clone(),
                            *node,
                            body.clone(),
                            windows.clone(),
                            max_retry_after,
                        ));
                    }
                }
            }
            BotKind::Slowloris => {
                let targets: Vec<SocketAddr> =
                    bases.iter().filter_map(|b| b.trim_start_matches("http://").parse().ok()).collect();
                if targets.len() != bases.len() {
                    continue;
                }
                let ends: Vec<(f64, f64)> = windows.clone();
                tasks.spawn(traffic::schedule(recorder.clone(), class, bot.rate, windows, max_in_flight, move |n| {
                    let r = r.clone();
                    let k = n % sources.len();
                    let (source, node) = (sources[k], source_node(k));
                    let target = targets[node];
                    let at = r.now();
                    let end = ends.iter().find(|w| w.0 <= at && at < w.1).map_or(at, |w| w.1);
                    let until = r.epoch() + Duration::from_secs_f64(end);
                    async move {
                        let (status, outcome) = traffic::slowloris(source, target, Duration::from_secs(1), until).await;
                        r.record(class, node, at, status, outcome);
                    }
                }));
            }
            kind => {
                let clients: Vec<reqwest::Client> = sources
                    .iter()
                    .map(|&s| {
                        if bot.browser_like {
                            crate::load::client_from(Some(s), timeout)
                        } else {
                            traffic::script_client(s, timeout)
                        }
                    })
                    .collect();
                let browsers: Vec<Arc<Browser>> = if matches!(kind, BotKind::PowSolvers | BotKind::SmsPumping) {
                    sources
                        .iter()
                        .enumerate()
                        .map(|(k, &s)| Arc::new(Browser::new(s, &bases[source_node(k)], timeout)))
                        .collect()
                } else {
                    Vec::new()
                };
                let (noise, solver, bases) = (noise.clone(), bot_solver.clone(), bases.to_vec());
                let members = scenario.members.count.max(1);
                let fake_keys = bot.fake_keys;
                let (phones, solves_proof) = (bot.phones.clone(), bot.solves_proof);
                let body = traffic::chat_body("drill-bots", scenario.upstream.max_tokens, "Write me a long essay");
                tasks.spawn(traffic::schedule(recorder.clone(), class, bot.rate, windows, max_in_flight, move |n| {
                    let r = r.clone();
                    let x = noise.next();
                    let k = n % clients.len();
                    let node = source_node(k);
                    let client = clients[k].clone();
                    let browser = browsers.get(k).cloned();
                    let (solver, base, body) = (solver.clone(), bases[node].clone(), body.clone());
                    // SMS pumping: the ranges in turn, a fresh number each time.
                    let phone = crate::phones::nth(&phones, n as u64);
                    async move {
                        let at = r.now();
                        let status = match kind {
                            BotKind::SignupFlood => {
                                let body = json!({"email": format!("u{x:x}@mail.example"), "password": format!("Pw-{x:x}-{x:o}")});
                                send(client.post(format!("{base}/auth/register")).json(&body)).await
                            }
                            BotKind::CredentialStuffing => {
                                // Mostly the members' real addresses, with passwords from a breach list.
                                let email = if x % 5 == 0 {
                                    format!("u{x:x}@mail.example")
                                } else {
                                    traffic::member_email((x % members as u64) as usize)
                                };
                                let body = json!({"email": email, "password": format!("Summer{}!", 2000 + x % 30)});
                                send(client.post(format!("{base}/auth/login")).json(&body)).await
                            }
                            BotKind::InferenceFlood => {
                                let mut rq = client
                                    .post(format!("{base}/v1/chat/completions"))
                                    .header("content-type", "application/json")
                                    .body(body);
                                if fake_keys {
                                    rq = rq.bearer_auth(format!("sk-{x:016x}{:016x}", x.rotate_left(17)));
                                }
                                send(rq).await
                            }
                            BotKind::PowSolvers => match browser {
                                Some(b) => {
                                    let body = json!({"email": format!("p{x:x}@mail.example"), "password": format!("Pw-{x:x}-{x:o}")});
                                    // Pays for challenges; does not wait in line.
                                    let deadline = Instant::now() + timeout;
                                    b.call_once_cleared(&solver, "/auth/register", &body, false, deadline).await
                                }
                                None => 0,
                            },
                            BotKind::SmsPumping => match browser {
                                Some(b) => {
                                    let body = json!({"phone": phone, "password": format!("Pw-{x:x}-{x:o}")});
                                    // A text is sent when this answers 201; the code is never entered.
                                    let deadline = Instant::now() + timeout;
                                    b.call_once_cleared(&solver, "/auth/register", &body, solves_proof, deadline).await
                                }
                                None => 0,
                            },
                            BotKind::Slowloris | BotKind::AccountFarm => 0,
                        };
                        r.record(class, node, at, status, Outcome::of_status(status));
                    }
                }));
            }
        }
    }

    // Metrics, model usage and the progress line, once a second until the traffic ends.
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new(Samples::default()));
    let sampler = {
        let (done, samples, sim, recorder) = (done.clone(), samples.clone(), sim.clone(), recorder.clone());
        let bar = progress_bar(opts.progress, kind, total);
        let scenario = scenario.clone();
        tokio::spawn(async move {
            let http =
                reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(2)).build().unwrap_or_default();
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            let mut last_phase = Some(usize::MAX);
            loop {
                ticker.tick().await;
                let t = recorder.now();
                let nodes: Vec<Option<Metrics>> =
                    futures_util::future::join_all(metrics_urls.iter().map(|url| fetch_metrics(&http, url))).await;
                // The fleet's sample only when every node answered: a missing node
                // would look like counters going back.
                let metrics = (!nodes.is_empty() && nodes.iter().all(Option::is_some))
                    .then(|| crate::fleet::fleet_metrics(&nodes.iter().flatten().cloned().collect::<Vec<_>>()));
                let attack = metrics.as_ref().and_then(|m| m.get("palisade_edge_under_attack").copied()).unwrap_or(0.0);
                if let Ok(mut s) = samples.lock() {
                    if let Some(m) = metrics {
                        s.fleet.push((t, m));
                    }
                    if nodes.len() > 1 {
                        s.nodes.resize_with(nodes.len(), Vec::new);
                        for (mine, m) in s.nodes.iter_mut().zip(nodes) {
                            mine.extend(m.map(|m| (t, m)));
                        }
                    }
                    s.usage.push((t, sim.usage()));
                }
                let phase_index = (0..scenario.phases.len()).find(|&i| t < scenario.window(i).1);
                let phase = phase_index.map_or("draining", |i| scenario.phases[i].name.as_str());
                let (sent, ok) = recorder.counts(MEMBERS);
                let bots: u64 = (0..recorder.classes.len())
                    .filter(|&c| is_bot_class(&recorder.classes[c]))
                    .map(|c| recorder.counts(c).0)
                    .sum();
                let line = format!(
                    "{phase:<9} users {ok}/{sent} ok · bot requests {bots}{}",
                    if attack > 0.0 { " · UNDER ATTACK" } else { "" }
                );
                match &bar {
                    Some(bar) => {
                        bar.set_position(t.min(total) as u64);
                        bar.set_message(line);
                    }
                    // Without a terminal: one line per phase, so a log shows progress.
                    None if phase_index != last_phase => eprintln!("  {:.0} s: {line}", t.max(0.0)),
                    None => {}
                }
                last_phase = phase_index;
                if done.load(Ordering::Relaxed) {
                    if let Some(bar) = &bar {
                        bar.finish_and_clear();
                    }
                    return;
                }
            }
        })
    };

    let drain = Duration::from_secs_f64(total + scenario.limits.drain_s + scenario.limits.request_timeout_s + 5.0);
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let samples = samples.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
    Ok(RunData {
        kind,
        classes: class_names,
        events: recorder.take(),
        metrics: samples.fleet,
        usage: samples.usage,
        setup_s,
        owns_upstream: true,
        solved_challenges: solver.solved.load(Ordering::Relaxed) + bot_solver.solved.load(Ordering::Relaxed),
        nodes: if bases.len() > 1 { bases.to_vec() } else { Vec::new() },
        node_metrics: samples.nodes,
        limit_probe,
        newcomer_sign_ups: scenario.newcomers.is_some().then(|| newcomer_counts.tally()),
        farm: farm.map(|f| f.setup),
    })
}

/// What the sampler collects once a second.
#[derive(Default)]
struct Samples {
    fleet: Vec<(f64, Metrics)>,
    /// Per node, when there are several.
    nodes: Vec<Vec<(f64, Metrics)>>,
    usage: Vec<(f64, BTreeMap<String, Usage>)>,
}

async fn fetch_metrics(http: &reqwest::Client, url: &str) -> Option<Metrics> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    Some(parse_metrics(&text))
}

fn progress_bar(enabled: bool, kind: TargetKind, total: f64) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.ceil() as u64);
    let style = indicatif::ProgressStyle::with_template("{prefix:>30} [{bar:30}] {pos:>3}/{len}s {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(kind.label());
    Some(bar)
}
