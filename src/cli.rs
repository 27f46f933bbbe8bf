//! Command-line types only: what the user typed, before it means anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "bai",
    version,
    about = "A declarative reconciler for GPU labs: write the lab in KDL, plan, review, apply.",
    long_about = "bai reads a lab (clusters, nodes, GPU images, vfolders and compute sessions) written in KDL, \
validates it, and plans the changes that make every node match it.\n\n\
Start with `bai validate lab.kdl`, then `bai plan --offline lab.kdl`."
)]
pub struct Cli {
    /// Act on one cluster of the file only
    #[arg(long, global = true, value_name = "NAME")]
    pub cluster: Option<String>,

    /// When to colour diagnostics (the errors and warnings every command prints on stderr)
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Let `include` reach files under DIR too; by default includes stay inside the lab file's directory
    /// tree (repeatable)
    #[arg(long, global = true, value_name = "DIR", value_parser = directory)]
    pub include_root: Vec<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check lab files and report every problem at once
    ///
    /// Exits 0 when there is no error (warnings are printed), 1 otherwise.
    Validate(ValidateArgs),
    /// Show the changes that `apply` would make
    ///
    /// Observes the nodes over SSH (no lease) unless `--offline` or `--state` is given. Text lists each change with its sign (+ create, ~ update, -/+ replace, - delete), its resource id and
    /// the field-level reasons, and ends with a summary line.
    Plan(PlanArgs),
    /// Show the plan that turns the lab of OLD into the lab of NEW, with no node at all
    ///
    /// What a reviewer reads on a pull request: `bai diff main.kdl branch.kdl --format markdown`.
    Diff(DiffArgs),
    /// Print the resource dependency graph
    Graph(GraphArgs),
    /// Rewrite lab files in canonical form, keeping every comment
    Fmt(FmtArgs),
    /// Make every node match the lab: observe, plan, confirm, execute
    ///
    /// Nodes are reached over SSH (or run the agent locally for `local=#true`), observed, and the plan is
    /// printed; after confirmation the changes run in dependency order, nodes in parallel. A failing node
    /// does not stop the others; its dependants are skipped. Exits 1 if anything failed.
    Apply(ApplyArgs),
    /// Remove everything bai owns for the cluster, in reverse dependency order
    Destroy(ConvergeArgs),
    /// Write `bai.lock` beside the lab: image digests, context and archive hashes, the agent's hash
    ///
    /// From the local files and what the nodes hold now (observed without the apply lease). Values the
    /// lock already records for an unchanged entry are kept, so locking twice gives the same bytes.
    /// Entries no node holds yet are written without their image id or digest.
    Lock(LockArgs),
    /// Show desired against observed state per node and session, and each node's inventory
    Status(StatusArgs),
    /// Keep the fleet under a continuous health probe: nodes, sessions, drift; optionally heal
    ///
    /// One long-lived agent connection per node; a ping every `interval`, a node `down` after
    /// `failure-threshold` misses and `up` after `success-threshold` answers (the lab's `probe` settings,
    /// overridden by the flags below). Session containers and `health` checks every round; drift against
    /// the file is reported and, with `--heal`, re-applied. On a terminal a live table; otherwise one line
    /// per transition. The lab file is reloaded when it changes or on SIGHUP. SIGINT/SIGTERM stop it.
    Watch(WatchArgs),
    /// List each cluster's generations: one per apply, destroy or rollback that changed a node
    ///
    /// Every apply (and destroy, and rollback) that changed a node records a generation there: that node's
    /// part of the desired state, the config hash, the lock, who applied it and when. This lists them per
    /// cluster, newest first, with the nodes holding each and each node's current one. Takes no lease.
    Generations(GenerationsArgs),
    /// Bring the nodes back to the state of an earlier generation (by default the previous one)
    ///
    /// Plans from the recorded state, prints what cannot be restored (data written into vfolders stays as
    /// it is; a vfolder removed since comes back empty), confirms, executes, and records the result as a
    /// new generation. A node whose record for the target was pruned is refused.
    Rollback(RollbackArgs),
    /// Print a session's output (stdout and stderr kept apart), as `docker logs` does
    ///
    /// Reads the container's log through the node's agent; takes no lease. `--follow` streams new output
    /// until the container stops for good (it goes on across restarts by the engine) or Ctrl-C. With
    /// `--all`, every session of the lab (or of the nodes `--on` selects), each line led by its session's
    /// name. On a terminal, control characters a session wrote are shown escaped (`--raw` passes them).
    Logs(LogsArgs),
    /// Run a command in a session's container: `bai exec lab.kdl SESSION -- CMD ARGS...`
    ///
    /// The command runs without a shell, its arguments passed as they are. `-i` passes this program's
    /// input to it, `-t` gives it a terminal (raw mode, window size followed; Ctrl-C goes to the remote
    /// command). Its exit code becomes bai's. Without `-t`, input and output are byte streams, so
    /// `bai exec lab.kdl s -- tar c dir | tar x` works.
    Exec(ExecArgs),
    /// Listen on this machine and carry connections to a session's port through its node
    ///
    /// `bai port-forward lab.kdl jupyter 8888`, `... jupyter 18888:jupyter` (a `port` name of the session),
    /// `... jupyter :8888` (any free local port). Each connection goes over the node's SSH connection, as
    /// with `ssh -L` or `kubectl port-forward`; several at once. Runs until Ctrl-C.
    PortForward(PortForwardArgs),
    /// Copy files and folders between this machine and a session: `SESSION:PATH` on either side
    ///
    /// Like `docker cp`: into DST when it is an existing directory, else as DST; modes and symbolic links
    /// kept. A relative PATH in the session is under `/home/work`. What comes out of a session is
    /// untrusted: nothing it planted (a link, `..`) writes outside DST; devices and FIFOs are skipped.
    Cp(CpArgs),
    /// Run the node agent (started by the controller; JSON lines on stdin/stdout)
    #[command(hide = true)]
    Agent(AgentArgs),
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Check first that this binary is this many bytes, then say it is ready (how the controller starts
    /// an installed agent over SSH)
    #[arg(long, value_name = "BYTES")]
    pub expect_size: Option<u64>,
    /// This binary is an upload not yet in place: hash it and rename it into its content address when it
    /// is this SHA-256, else remove it and end (how a fresh node's upload starts)
    #[arg(long, value_name = "SHA256")]
    pub place: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Record the host keys of nodes seen for the first time (like OpenSSH's accept-new); a changed key
    /// is always refused
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Limit the run to nodes: a name, a glob (`gpu-*`) or `@label=value`; repeatable
    #[arg(long = "on", value_name = "SELECTOR")]
    pub on: Vec<String>,

    /// How many nodes to work on at once
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub parallel: usize,

    /// The OpenSSH client configuration to read for what the lab leaves out (like `ssh -F`); `none` for
    /// none. Default: `~/.ssh/config` when it exists
    #[arg(long, env = "BAI_SSH_CONFIG", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

#[derive(Debug, Args)]
/// What `apply` takes beyond what every converging command does.
pub struct ApplyArgs {
    /// Move `bai.lock` forward where the lab changed (an edited context, a new archive, another bai)
    /// instead of refusing to run
    #[arg(long)]
    pub update_lock: bool,

    /// Watch the sessions it created or replaced for up to DURATION (`30s`, `2m`); when one is not healthy
    /// by then, roll its nodes back to their previous generation and exit 1
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub confirm_healthy: Option<std::time::Duration>,

    #[command(flatten)]
    pub converge: ConvergeArgs,
}

#[derive(Debug, Args)]
/// What `apply`, `destroy` and `rollback` take: each walks the nodes towards a goal.
pub struct ConvergeArgs {
    /// The lab file; for `apply`, also a plan saved by `bai plan -o PLAN` (carried out as saved)
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Do not ask for confirmation (needed without a terminal)
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Allow removing vfolders that hold data (they are moved aside to a tombstone, never erased)
    #[arg(long)]
    pub allow_data_loss: bool,

    /// `json`: stdout holds only the diagnostics document (schema/diagnostics.schema.json) of every
    /// failure and warning met, with no error on success; the plan and the report go to stderr
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lab file; the lock is `bai.lock` in its directory
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct GenerationsArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The generation to go back to (default: the one before the current)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub to: Option<u64>,

    #[command(flatten)]
    pub converge: ConvergeArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// `json` writes the state snapshot that `bai plan --state` reads
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// One round over every node, then exit: 0 when everything is up, running, healthy and as the file
    /// says, 1 otherwise (for cron and CI)
    #[arg(long)]
    pub once: bool,

    /// Re-apply what drifted (missing, stopped or changed containers), under the apply lease
    #[arg(long)]
    pub heal: bool,

    /// With --heal: at most this many heals of one session in any minute
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub heal_limit: usize,

    /// Serve a live dashboard at / and GET /ping, /status and /metrics (Prometheus) on this address,
    /// e.g. 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// `text`: a live table on a terminal, else a line per transition; `json`: a JSON object per event
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,

    /// Ping every DURATION (overrides the lab's `probe interval`, for health checks too)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub interval: Option<std::time::Duration>,

    /// A ping or check missing after DURATION is a miss (overrides the lab's `probe timeout`)
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub timeout: Option<std::time::Duration>,

    /// Misses in a row that make a node down or a session unhealthy
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub failure_threshold: Option<u32>,

    /// Answers in a row that make a node up or a session healthy
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub success_threshold: Option<u32>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The session whose output to print
    #[arg(value_name = "SESSION", required_unless_present = "all", conflicts_with = "all")]
    pub session: Option<String>,

    /// Every session of the lab (or of the nodes `--on` selects), each line led by its name
    #[arg(long)]
    pub all: bool,

    /// Keep printing new output until the container stops for good, or Ctrl-C
    #[arg(long, short = 'f')]
    pub follow: bool,

    /// Only the last N lines written so far
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,

    /// Only output since DURATION ago (`10m`, `2h`) or since TIME (`2026-12-06T10:00:00Z`)
    #[arg(long, value_name = "DURATION|TIME", value_parser = since)]
    pub since: Option<i64>,

    /// Lead each line with the time the engine stamped it
    #[arg(long, short = 't')]
    pub timestamps: bool,

    /// Pass what the session wrote as it is, control characters included, even on a terminal
    #[arg(long)]
    pub raw: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The session to run the command in
    #[arg(value_name = "SESSION")]
    pub session: String,

    /// Pass this program's input to the command
    #[arg(long, short = 'i')]
    pub interactive: bool,

    /// Give the command a terminal (needs one here)
    #[arg(long, short = 't')]
    pub tty: bool,

    /// The command and its arguments, after `--`
    #[arg(value_name = "CMD", required = true, last = true)]
    pub command: Vec<String>,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct PortForwardArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// The session whose ports to reach
    #[arg(value_name = "SESSION")]
    pub session: String,

    /// `PORT`, `NAME` (a `port` of the session), `LOCAL:PORT` or `:PORT` (any free local port)
    #[arg(value_name = "[LOCAL:]PORT|NAME", required = true)]
    pub ports: Vec<String>,

    /// The local address to listen on
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub address: std::net::IpAddr,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// What to copy: a local path, or `SESSION:PATH`
    #[arg(value_name = "SRC")]
    pub src: String,

    /// Where to: a local path, or `SESSION:PATH`
    #[arg(value_name = "DST")]
    pub dst: String,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `10m` ago, or an RFC 3339 time, as Unix seconds.
fn since(text: &str) -> Result<i64, String> {
    if let Some((secs, _)) = bai::utc::Utc::parse_rfc3339(text) {
        return Ok(secs);
    }
    let ago = bai::config::value::parse_duration(text)
        .map_err(|_| "give a duration (`10m`, `2h`) or a time (`2026-12-06T10:00:00Z`)".to_string())?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(i64::try_from(now.saturating_sub(ago.as_secs())).unwrap_or(0))
}

/// An existing directory.
fn directory(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if path.is_dir() { Ok(path) } else { Err("not a directory".into()) }
}

/// `5s`, `500ms`, `1m`: the lab's own duration syntax.
fn duration(text: &str) -> Result<std::time::Duration, String> {
    match bai::config::value::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{}; {}", e.message, e.help)),
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Lab files to check
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    #[arg(long, value_enum, default_value_t = DiagnosticFormat::Human)]
    pub format: DiagnosticFormat,

    /// Treat warnings as errors
    #[arg(long)]
    pub deny_warnings: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum DiagnosticFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct PlanOutput {
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,

    /// Exit 0 when there are no changes, 2 when there are, 1 on error
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Plan against nodes that hold nothing (no network)
    #[arg(long, conflicts_with = "state")]
    pub offline: bool,

    /// Plan against an observed-state snapshot (`bai status --format json`; schema/state.schema.json)
    #[arg(long, value_name = "SNAPSHOT.json")]
    pub state: Option<PathBuf>,

    /// Also save the plan to PLAN, with a fingerprint of the lab and of the nodes it changes, for
    /// `bai apply PLAN` (which refuses it once either has changed)
    #[arg(long = "out", short = 'o', value_name = "PLAN")]
    pub out: Option<PathBuf>,

    #[command(flatten)]
    pub output: PlanOutput,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The lab before the change
    #[arg(value_name = "OLD")]
    pub old: PathBuf,

    /// The lab after the change
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    #[command(flatten)]
    pub output: PlanOutput,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The lab file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct FmtArgs {
    /// Files to format
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Change nothing; exit 1 and list the files that are not formatted
    #[arg(long)]
    pub check: bool,
}
