//! `bai watch`: the fleet under a continuous probe. One long-lived agent connection per node, a ping every
//! `interval` under the Kubernetes threshold model, session containers and health checks, drift against the
//! file and, with `--heal`, re-applying what drifted. Events go out on a channel and the status is shared
//! behind a mutex; the CLI prints the one and serves the other.
//!
//! This module is the supervisor: one task per watched node, started, restarted (when how the node is
//! reached changed) or stopped as the lab file changes, and one round for `--once`.

pub mod backoff;
pub mod confirm;
pub mod context;
pub mod dashboard;
pub mod drift;
pub mod event;
pub mod heal;
pub mod http;
pub mod metrics;
pub mod node;
pub mod rate;
pub mod secrets;
pub mod settings;
pub mod status;
pub mod table;
pub mod threshold;
pub mod truth;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::fleet::{ConnectOptions, select};
use crate::model::{Cluster, Config};
use crate::state::ClusterState;
use crate::watch::context::WatchContext;
use crate::watch::event::Event;
use crate::watch::settings::Overrides;
use crate::watch::status::FleetStatus;

/// How the watcher runs, from the command line.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub connect: ConnectOptions,
    pub overrides: Overrides,
    /// `--on`: the nodes to watch (all when empty).
    pub selectors: Vec<String>,
    pub heal: bool,
    /// Heals per session in any sliding minute.
    pub heal_limit: usize,
}

/// A cluster as the watcher needs it: the model, and each node's sessions with their spec hashes,
/// computed once per version of the file rather than by every node every round.
#[derive(Debug)]
pub struct Watched {
    pub cluster: Cluster,
    /// Node name → the sessions the file puts there.
    pub nodes: BTreeMap<String, NodeSessions>,
}

#[derive(Debug, Default)]
pub struct NodeSessions {
    /// Session name → spec hash.
    pub hashes: BTreeMap<String, String>,
    /// Indices into `cluster.sessions` of this node's sessions that declare a `health` check.
    pub checked: Vec<usize>,
    /// Specs (digests unknown) of this node's sessions that hold secrets: their hashes in `hashes` are
    /// without digests, and the node's task computes the real ones under the node's key.
    pub secret: BTreeMap<String, crate::state::spec::SessionSpec>,
    /// Specs of this node's GPU sessions. The watcher does not place GPUs (`apply` does): such a session
    /// is expected on whatever devices its container holds, when they are what it asks for
    /// ([`NodeSessions::on_their_devices`]).
    pub gpu: BTreeMap<String, crate::state::spec::SessionSpec>,
}

impl NodeSessions {
    /// `desired` with each GPU session's hash as it is on the devices its container holds (`specs`: the
    /// specs with secrets digested, where known). A container holding other devices than its session asks
    /// keeps the hash without devices, which no container carries: drift.
    pub fn on_their_devices(
        &self,
        desired: &BTreeMap<String, String>,
        specs: Option<&BTreeMap<String, crate::state::spec::SessionSpec>>,
        observed: &[crate::state::snapshot::SessionSnapshot],
    ) -> BTreeMap<String, String> {
        let mut out = desired.clone();
        for s in observed {
            let Some(want) = specs.and_then(|k| k.get(&s.name)).or_else(|| self.gpu.get(&s.name)) else { continue };
            if want.resources.gpus == 0 {
                continue;
            }
            if let Some(placed) = s.spec.as_ref().and_then(|seen| crate::state::spec::on_devices_of(want, seen)) {
                out.insert(s.name.clone(), crate::state::spec::hash_of(&placed));
            }
        }
        out
    }
}

impl Watched {
    pub fn new(cluster: Cluster) -> Self {
        let mut nodes: BTreeMap<String, NodeSessions> = BTreeMap::new();
        for (name, mut s) in ClusterState::desired(&cluster).sessions {
            let entry = nodes.entry(s.node.to_string()).or_default();
            if let Some(spec) = s.spec.as_mut().filter(|sp| sp.resources.gpus > 0) {
                // Placed offline, by index: not what the nodes hold. See `gpu`.
                spec.resources.devices.clear();
                s.hash = crate::state::spec::hash_of(spec);
                entry.gpu.insert(name.to_string(), spec.clone());
            }
            if let Some(spec) = s.spec.filter(|sp| sp.env.values().any(crate::state::spec::EnvSpec::is_secret)) {
                entry.secret.insert(name.to_string(), spec);
            }
            entry.hashes.insert(name.to_string(), s.hash);
        }
        for (i, s) in cluster.sessions.iter().enumerate().filter(|(_, s)| s.health.is_some()) {
            nodes.entry(s.node.value.to_string()).or_default().checked.push(i);
        }
        Watched { cluster, nodes }
    }

    /// The sessions the file puts on `node` (none for a node without any).
    pub fn on(&self, node: &str) -> &NodeSessions {
        static NONE: std::sync::LazyLock<NodeSessions> = std::sync::LazyLock::new(NodeSessions::default);
        self.nodes.get(node).unwrap_or(&NONE)
    }
}

/// A valid lab and the files it was read from (watched for changes).
pub struct WatchedLab {
    pub config: Config,
    pub files: Vec<PathBuf>,
}

/// Reads the lab again; `Err` carries the rendered diagnostics.
pub type Loader = Box<dyn Fn() -> Result<WatchedLab, String> + Send + Sync>;

/// How often the lab's files are checked for changes.
const FILE_POLL: Duration = Duration::from_secs(1);

struct NodeHandle {
    spec: watch::Sender<Arc<Watched>>,
    task: JoinHandle<()>,
    /// How the node is reached; a change restarts its task (and so its connection).
    reach: String,
}

/// Every watched node's task, by (cluster, node).
struct Fleet {
    shared: WatchContext,
    nodes: BTreeMap<(String, String), NodeHandle>,
}

fn reach_key(cluster: &Cluster, node: &crate::model::Node, options: &crate::fleet::ConnectOptions) -> String {
    if node.is_local() { "local".into() } else { format!("{:?}", crate::fleet::ssh_target(cluster, node, options)) }
}

impl Fleet {
    /// Brings the tasks in line with `config`; returns (added, removed, changed) as `cluster/node`.
    fn reconcile(&mut self, config: &Config) -> (Vec<String>, Vec<String>, Vec<String>) {
        let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
        let mut wanted: BTreeMap<(String, String), (Arc<Watched>, String, String)> = BTreeMap::new();
        for cluster in &config.clusters {
            let watched = Arc::new(Watched::new(cluster.clone()));
            for node in cluster.nodes.iter().filter(|n| select::selected(n, &self.shared.options.selectors)) {
                let key = (cluster.name.value.to_string(), node.name.value.to_string());
                let connect = &self.shared.options.connect;
                wanted.insert(
                    key,
                    (watched.clone(), reach_key(cluster, node, connect), node::address(cluster, node, connect)),
                );
            }
        }
        let gone: Vec<(String, String)> = self.nodes.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for key in gone {
            if let Some(handle) = self.nodes.remove(&key) {
                handle.task.abort();
            }
            let mut status = self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(c) = status.clusters.get_mut(&key.0) {
                c.nodes.remove(&key.1);
                if c.nodes.is_empty() {
                    status.clusters.remove(&key.0);
                }
            }
            removed.push(format!("{}/{}", key.0, key.1));
        }
        for (key, (watched, reach, address)) in wanted {
            match self.nodes.get_mut(&key) {
                Some(handle) if handle.reach == reach => {
                    let _ = handle.spec.send(watched);
                }
                existing => {
                    if let Some(old) = existing {
                        old.task.abort();
                        changed.push(format!("{}/{}", key.0, key.1));
                    } else {
                        added.push(format!("{}/{}", key.0, key.1));
                    }
                    {
                        let mut status = self.shared.status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        let entry =
                            status.clusters.entry(key.0.clone()).or_default().nodes.entry(key.1.clone()).or_default();
                        *entry = status::NodeStatus { address, ..status::NodeStatus::default() };
                    }
                    let (tx, rx) = watch::channel(watched);
                    let task = tokio::spawn(node::run(rx, key.1.clone(), self.shared.clone()));
                    self.nodes.insert(key, NodeHandle { spec: tx, task, reach });
                }
            }
        }
        (added, removed, changed)
    }

    /// Stops every node task and waits for them, which drops (closes) every connection.
    async fn stop(self) {
        for handle in self.nodes.values() {
            handle.task.abort();
        }
        for (_, handle) in self.nodes {
            let _ = handle.task.await;
        }
    }
}

fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len())))
        .collect()
}

/// Watches until `shutdown` resolves: reloads the lab when one of its files changes or `reload` fires
/// (SIGHUP), keeping the previous lab when the new one has errors.
pub async fn run(
    lab: WatchedLab,
    loader: Loader,
    options: Arc<WatchOptions>,
    status: Arc<Mutex<FleetStatus>>,
    events: mpsc::UnboundedSender<Event>,
    mut reload: mpsc::UnboundedReceiver<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let shared = WatchContext { status: status.clone(), events: events.clone(), options, agents: Default::default() };
    let mut fleet = Fleet { shared, nodes: BTreeMap::new() };
    fleet.reconcile(&lab.config);
    let mut files = lab.files;
    let mut seen = stamps(&files);
    let loader = Arc::new(loader);
    tokio::pin!(shutdown);
    let mut poll = tokio::time::interval(FILE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = poll.tick() => {
                let now = stamps(&files);
                if now == seen {
                    continue;
                }
                seen = now;
            }
            signal = reload.recv() => {
                if signal.is_none() {
                    // Nobody can ask for a reload any more; file changes still count.
                    reload = mpsc::unbounded_channel().1;
                    continue;
                }
            }
        }
        let load = loader.clone();
        let result =
            tokio::task::spawn_blocking(move || load()).await.unwrap_or_else(|e| Err(format!("reload failed: {e}")));
        match result {
            Ok(new) => {
                status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).config_error = None;
                let (added, removed, changed) = fleet.reconcile(&new.config);
                files = new.files;
                seen = stamps(&files);
                let _ = events.send(Event::Reloaded { added, removed, changed });
            }
            Err(diagnostics) => {
                status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).config_error =
                    Some(diagnostics.clone());
                let _ = events.send(Event::ConfigRejected { diagnostics });
            }
        }
    }
    fleet.stop().await;
}

/// `--once`: one round over every selected node at once; whether everything was up, running, healthy
/// and as the file says.
pub async fn once(
    config: &Config,
    options: Arc<WatchOptions>,
    status: Arc<Mutex<FleetStatus>>,
    events: mpsc::UnboundedSender<Event>,
) -> bool {
    let shared = WatchContext { status: status.clone(), events, options, agents: Default::default() };
    let mut work = Vec::new();
    for cluster in &config.clusters {
        let watched = Arc::new(Watched::new(cluster.clone()));
        for node in cluster.nodes.iter().filter(|n| select::selected(n, &shared.options.selectors)) {
            {
                let mut s = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = s
                    .clusters
                    .entry(cluster.name.value.to_string())
                    .or_default()
                    .nodes
                    .entry(node.name.value.to_string())
                    .or_default();
                entry.address = node::address(cluster, node, &shared.options.connect);
            }
            work.push(tokio::spawn(node::once(watched.clone(), node.name.value.to_string(), shared.clone())));
        }
    }
    for task in work {
        let _ = task.await;
    }
    status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).all_good()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::fleet::scripted::{self, Agents, Answer, LAB, Log};
    use crate::watch::status::Liveness;

    fn config() -> Config {
        scripted::lab(LAB).2.config
    }

    /// What a probe of `a` answers when `on-a` runs as the file says.
    fn running_on_a(config: &Config) -> serde_json::Value {
        let hash = Watched::new(config.clusters[0].clone()).on("a").hashes["on-a"].clone();
        serde_json::json!({
            "sessions": [{"name": "on-a", "spec_hash": hash, "state": "running"}],
            "unowned": [], "health": [], "generation": null,
        })
    }

    fn options(script: impl Fn(&str, &'static str, &str) -> Answer + Send + Sync + 'static) -> Arc<WatchOptions> {
        watch_options(scripted::options_with(Agents { log: Log::default(), script: Arc::new(script) }))
    }

    /// Fast rounds, one answer or miss decides.
    fn watch_options(connect: ConnectOptions) -> Arc<WatchOptions> {
        Arc::new(WatchOptions {
            connect,
            overrides: Overrides {
                interval: Some(Duration::from_millis(20)),
                timeout: Some(Duration::from_secs(2)),
                failure_threshold: Some(1),
                success_threshold: Some(1),
            },
            selectors: Vec::new(),
            heal: false,
            heal_limit: 3,
        })
    }

    fn fresh_status() -> Arc<Mutex<FleetStatus>> {
        Arc::new(Mutex::new(FleetStatus::default()))
    }

    #[tokio::test]
    async fn once_holds_each_node_up_or_down_and_each_session_to_the_file() {
        let config = config();
        let probe = running_on_a(&config);
        let opts = options(move |node, method, _| match (node, method) {
            ("b", "hello") => Answer::HangUp,
            ("a", "probe") => Answer::With(probe.clone()),
            _ => Answer::Ok(Duration::ZERO),
        });
        let status = fresh_status();
        let (events, mut seen) = mpsc::unbounded_channel();
        let good = once(&config, opts, status.clone(), events).await;
        assert!(!good, "b is down");
        let s = status.lock().expect("status").clone();
        let (a, b) = (&s.clusters["t"].nodes["a"], &s.clusters["t"].nodes["b"]);
        assert_eq!(a.state, Liveness::Up, "{a:?}");
        assert_eq!(a.sessions["on-a"].container, "running");
        assert_eq!(a.sessions["on-a"].drift, None);
        assert_eq!(b.state, Liveness::Down, "{b:?}");
        assert!(b.last_error.as_deref().is_some_and(|e| e.contains("closed the connection")), "{b:?}");
        let mut lines = Vec::new();
        while let Ok(event) = seen.try_recv() {
            lines.push(event.line());
        }
        assert!(lines.iter().any(|l| l.starts_with("node a up")), "{lines:?}");
    }

    #[tokio::test]
    async fn a_session_missing_from_its_node_is_drift() {
        let config = config();
        let opts = options(|_, _, _| Answer::Ok(Duration::ZERO));
        let status = fresh_status();
        let good = once(&config, opts, status.clone(), mpsc::unbounded_channel().0).await;
        assert!(!good);
        let s = status.lock().expect("status").clone();
        let on_a = &s.clusters["t"].nodes["a"].sessions["on-a"];
        assert_eq!(on_a.container, "missing", "{on_a:?}");
        assert!(on_a.drift.is_some(), "{on_a:?}");
        assert_eq!(s.clusters["t"].nodes["b"].state, Liveness::Up, "b answers");
    }

    #[tokio::test]
    async fn a_node_that_stops_answering_pings_goes_down_and_comes_back() {
        let config = config();
        let probe = running_on_a(&config);
        // a answers its first pings, fails the next ones, then answers again.
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let opts = options(move |node, method, _| match (node, method) {
            ("a", "ping") => match counted.fetch_add(1, Ordering::SeqCst) {
                3..=5 => Answer::Fail("the node is busy".into()),
                _ => Answer::Ok(Duration::ZERO),
            },
            ("a", "probe") => Answer::With(probe.clone()),
            _ => Answer::Ok(Duration::ZERO),
        });
        let lab = WatchedLab { config: config.clone(), files: Vec::new() };
        let loader: Loader = Box::new(|| Err("no reloads here".into()));
        let (events, mut seen) = mpsc::unbounded_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher =
            tokio::spawn(run(lab, loader, opts, fresh_status(), events, mpsc::unbounded_channel().1, async {
                let _ = stopped.await;
            }));
        let mut lines: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while lines.iter().filter(|l| l.starts_with("node a up")).nth(1).is_none() {
            match tokio::time::timeout_at(deadline, seen.recv()).await {
                Ok(Some(event)) => lines.push(event.line()),
                _ => panic!("no down and up again within 10 s: {lines:?}"),
            }
        }
        let _ = stop.send(());
        let _ = watcher.await;
        let a: Vec<&String> = lines.iter().filter(|l| l.starts_with("node a ")).collect();
        assert!(a[0].starts_with("node a up"), "{a:?}");
        assert!(a[1].starts_with("node a down after 1 missed ping") && a[1].contains("the node is busy"), "{a:?}");
        assert!(a[2].starts_with("node a up"), "{a:?}");
        assert!(pings.load(Ordering::SeqCst) >= 7);
    }

    #[test]
    fn through_the_real_agent_an_applied_lab_is_all_good_and_a_lost_session_is_drift() {
        use crate::agent::containers::{Containers, InMemory};
        use crate::fleet::in_process::InProcess;
        use crate::reconcile::converge::{ConvergeRequest, Goal, converge};
        let (dir, file, loaded) = scripted::lab(LAB);
        let containers = InMemory::default();
        let options = scripted::options_with(InProcess { root: dir.path().join("nodes"), engine: containers.clone() });
        let engine = crate::reconcile::Engine::with_options(options.clone(), 4).expect("engine");
        let request = ConvergeRequest::everything(Goal::Apply, &loaded, &file);
        assert!(converge(&engine, &request, &crate::reconcile::report::Recorded::default()));

        let watch = |options: crate::fleet::ConnectOptions| {
            let opts = watch_options(options);
            let status = fresh_status();
            let good = engine.block_on(once(&loaded.config, opts, status.clone(), mpsc::unbounded_channel().0));
            let s = status.lock().expect("status").clone();
            (good, s)
        };
        let (good, s) = watch(options.clone());
        assert!(good, "{s:?}");
        assert_eq!(s.clusters["t"].nodes["b"].sessions["after-a"].container, "running");

        // A container gone behind bai's back is drift.
        assert!(engine.block_on(containers.remove_session("t", "on-b")).expect("removed"));
        let (good, s) = watch(options);
        assert!(!good);
        let on_b = &s.clusters["t"].nodes["b"].sessions["on-b"];
        assert_eq!((on_b.container.as_str(), on_b.drift.is_some()), ("missing", true), "{on_b:?}");
    }
}
