//! One node under watch: a long-lived agent connection, a ping every `interval` under the threshold
//! model, reconnects with backoff, and each round a `probe` of the node's sessions (containers, due
//! health checks, drift), healing what drifted when asked. Everything it learns goes into the shared
//! [`FleetStatus`]; every transition goes out as an [`Event`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fleet::{self, NodeConn, NodeFailure};
use crate::generation::GenerationRecord;
use crate::model::{Cluster, HealthCheck, Node};
use crate::protocol::{GetGeneration, HealthCheckSpec, HealthProbe, Method, Pong, Probe, ProbeReply};
use crate::transport::client::ClientError;
use crate::watch::backoff::Backoff;
use crate::watch::context::WatchContext;
use crate::watch::drift::{Drift, DriftKind, drift};
use crate::watch::event::Event;
use crate::watch::rate::HealLimit;
use crate::watch::secrets::KeyedHashes;
use crate::watch::settings::{Timing, health_timing, node_timing};
use crate::watch::status::{HealthStatus, Liveness, PublishedPort, SessionStatus, Verdict};
use crate::watch::threshold::Threshold;
use crate::watch::truth::{Landed, Truth};
use crate::watch::{Watched, heal};

/// A heal running this long while drift waits for the next one is said to be still running (once): a
/// heal holds the node's lease, and a slow one would otherwise hold back every later heal silently.
const SLOW_HEAL: Duration = Duration::from_secs(5);

/// Nodes that host no session are checked for stray sessions this often, not every round: the ping
/// alone is what keeps an idle node cheap.
const IDLE_PROBE_EVERY: Duration = Duration::from_secs(60);

/// Where a node is reached, shown in the status.
pub fn address(cluster: &Cluster, node: &Node, options: &fleet::ConnectOptions) -> String {
    if node.is_local() {
        return "local".to_string();
    }
    match fleet::ssh_target(cluster, node, options) {
        Ok(t) => format!("{}:{}", t.host, t.port),
        // The reason is the node's error when it connects; the status shows where it would go.
        Err(_) => node.address.as_ref().map_or_else(|| node.name.value.to_string(), |a| a.value.clone()),
    }
}

struct SessionTrack {
    threshold: Threshold,
    next_check: Instant,
    container: Option<String>,
    drift: Option<Drift>,
    limit: HealLimit,
    held_back_reported: bool,
    /// The generation for which a heal was refused (the node follows it, not the file), said once.
    refused_for: Option<u64>,
}

type Connecting = Pin<Box<dyn Future<Output = Result<NodeConn, NodeFailure>> + Send>>;

/// A ping's outcome: the answer and its round trip, or why it missed.
type PingResult = Result<(Pong, Duration), String>;

struct NodeTask {
    shared: WatchContext,
    cluster: String,
    node: String,
    conn: Option<NodeConn>,
    threshold: Threshold,
    sessions: BTreeMap<String, SessionTrack>,
    last_error: Option<String>,
    rounds: u64,
    idle_probe_at: Option<Instant>,
    /// The heal under way (on a connection of its own), when it started, and whether a round that
    /// wanted another heal meanwhile has said so.
    heal: Option<(JoinHandle<()>, Instant, bool)>,
    /// Whether the node is held to the watched file or to a generation another controller recorded.
    truth: Truth<Watched>,
    /// Hashes of this node's sessions with secrets, for the file version they were computed for; made
    /// again for a new connection (the node's key may have changed) or a new file version.
    keyed: Option<(Arc<Watched>, KeyedHashes)>,
}

/// Watches `node` of the cluster in `spec` until the task is aborted or the node leaves the file.
pub async fn run(mut spec: watch::Receiver<Arc<Watched>>, node: String, shared: WatchContext) {
    let cluster = spec.borrow().cluster.name.value.to_string();
    let mut task = NodeTask::new(shared, cluster, node);
    let mut connecting: Option<Connecting> = None;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut retry_at = Instant::now();
    let mut next_round = tokio::time::Instant::now();
    let mut current: Option<(Arc<Watched>, Timing)> = None;
    loop {
        if current.is_none() {
            let watched = spec.borrow_and_update().clone();
            let Some(model) = watched.cluster.nodes.iter().find(|n| n.name.value.as_str() == task.node) else {
                return;
            };
            let timing = node_timing(&watched.cluster, model, &task.shared.options.overrides);
            task.threshold.retune(timing.failure_threshold, timing.success_threshold);
            current = Some((watched, timing));
        }
        let Some((watched, timing)) = current.clone() else { return };
        if task.conn.is_none() && connecting.is_none() && Instant::now() >= retry_at {
            connecting = Some(connect(&watched, &task.node, &task.shared));
        }
        tokio::select! {
            result = async { connecting.as_mut().expect("guarded by the branch condition").await }, if connecting.is_some() => {
                connecting = None;
                match result.and_then(|conn| task.claim_agent(conn)) {
                    Ok(conn) => {
                        task.conn = Some(conn);
                        task.keyed = None;
                        backoff.reset();
                        next_round = first_round(timing.interval);
                        if task.last_error.take().is_some() {
                            task.shared.emit(Event::Connected { cluster: task.cluster.clone(), node: task.node.clone() });
                        }
                    }
                    Err(failure) => {
                        let delay = backoff.next_delay(fastrand::f64());
                        retry_at = Instant::now() + delay;
                        task.lost(failure.message, delay);
                    }
                }
                continue;
            }
            changed = spec.changed() => {
                if changed.is_err() {
                    return;
                }
                current = None;
                continue;
            }
            () = tokio::time::sleep_until(retry_at.into()), if task.conn.is_none() && connecting.is_none() => continue,
            () = tokio::time::sleep_until(next_round) => {}
        }
        if task.conn.is_none() && task.last_error.is_none() && task.rounds == 0 && connecting.is_some() {
            // Still making the first connection: not a miss yet (the connect timeout bounds this).
            next_round += timing.interval;
            continue;
        }
        next_round += timing.interval;
        if next_round < tokio::time::Instant::now() {
            next_round = tokio::time::Instant::now() + timing.interval;
        }
        let ping = task.ping(timing.timeout).await;
        if let Err(broken) = &ping
            && task.conn.is_none()
            && connecting.is_none()
            && broken.starts_with("connection")
        {
            // The connection just broke: try again at once, backing off only if that fails too.
            retry_at = Instant::now();
        }
        let answered = ping.is_ok();
        task.record_ping(ping);
        if answered {
            task.probe_sessions(&watched, &timing).await;
        }
        task.rounds += 1;
    }
}

/// Pings are grouped on a fleet-wide grid of this step: the nodes of one slot wake the controller once
/// together instead of once each, which halves its CPU per ping (BENCHMARKS.md), while the slots spread
/// the fleet over the interval so that round trips stay short. 200 ms: with the agent answering from the
/// reactor, 200 nodes on one 2-core machine answer within 5–7 ms at p99 on this grid (10 ms is the
/// target), and each wake-up carries twice the pings of a 100 ms grid.
const SLOT: Duration = Duration::from_millis(200);

/// When a freshly connected node pings first: a random slot of the fleet-wide grid within one interval.
fn first_round(interval: Duration) -> tokio::time::Instant {
    static GRID: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let origin = *GRID.get_or_init(tokio::time::Instant::now);
    let now = tokio::time::Instant::now();
    let slot = SLOT.min(interval).as_nanos().max(1);
    let target = (now - origin + interval.mul_f64(fastrand::f64())).as_nanos();
    let aligned = target.div_ceil(slot) * slot;
    origin + Duration::from_nanos(u64::try_from(aligned).unwrap_or(u64::MAX))
}

/// `--once`: connect, one ping, one probe of every session and health check, then close.
pub async fn once(watched: Arc<Watched>, node: String, shared: WatchContext) {
    let cluster = watched.cluster.name.value.to_string();
    let Some(model) = watched.cluster.nodes.iter().find(|n| n.name.value.as_str() == node) else { return };
    let timing = node_timing(&watched.cluster, model, &shared.options.overrides);
    let mut task = NodeTask::new(shared.clone(), cluster, node.clone());
    let reached = connect(&watched, &node, &shared).await.and_then(|conn| task.claim_agent(conn));
    let ping = match reached {
        Ok(conn) => {
            task.conn = Some(conn);
            task.ping(timing.timeout).await
        }
        Err(failure) => {
            shared.update(&task.cluster, &node, |n| n.probe_errors_total += 1);
            Err(failure.message)
        }
    };
    let answered = ping.is_ok();
    task.record_ping(ping);
    if answered {
        task.probe_sessions(&watched, &timing).await;
    }
    if let Some((heal, _, _)) = task.heal.take() {
        let _ = heal.await;
    }
}

fn connect(watched: &Arc<Watched>, node: &str, shared: &WatchContext) -> Connecting {
    let watched = watched.clone();
    let node = node.to_string();
    let options = shared.options.clone();
    Box::pin(async move {
        let Some(model) = watched.cluster.nodes.iter().find(|n| n.name.value.as_str() == node) else {
            return Err(NodeFailure::unreachable(&node, "bai::watch::not_in_file", "not in the file".into(), None));
        };
        // Connecting is bounded by the SSH connect timeout; installing and starting the agent gets as long again.
        let limit = fleet::ssh_target(&watched.cluster, model, &options.connect)
            .map_or(fleet::ssh_target::DEFAULT_CONNECT_TIMEOUT, |t| t.connect_timeout)
            * 2;
        match tokio::time::timeout(limit, fleet::open(&watched.cluster, model, &options.connect, false)).await {
            Ok(result) => result,
            Err(_) => Err(NodeFailure::unreachable(
                &node,
                "bai::agent::start_timeout",
                format!("node `{node}`: no agent session within {}s", limit.as_secs()),
                None,
            )),
        }
    })
}

fn seconds(d: Duration) -> String {
    crate::config::value::format_duration(d)
}

impl NodeTask {
    /// A node not yet connected; the threshold is tuned to the node's settings before the first round.
    fn new(shared: WatchContext, cluster: String, node: String) -> Self {
        NodeTask {
            shared,
            cluster,
            node,
            conn: None,
            threshold: Threshold::new(1, 1),
            sessions: BTreeMap::new(),
            last_error: None,
            rounds: 0,
            idle_probe_at: None,
            heal: None,
            truth: Truth::default(),
            keyed: None,
        }
    }

    /// With `--heal`, claims the agent `conn` reached for this node, or refuses it when another node of
    /// the cluster reached the same one (see `fleet::shared_agents`): heals of the two would share one
    /// lease and one history. Watching alone only reads, each node's sessions by its own name, so it
    /// goes on (the probe bench watches 200 nodes on 8 servers that way).
    fn claim_agent(&self, conn: NodeConn) -> Result<NodeConn, NodeFailure> {
        if !self.shared.options.heal {
            return Ok(conn);
        }
        let Some(identity) = conn.identity.clone() else { return Ok(conn) };
        let mut agents = self.shared.agents.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = agents.entry((self.cluster.clone(), identity)).or_insert_with(|| self.node.clone());
        if *holder == self.node {
            return Ok(conn);
        }
        Err(fleet::shared_agent_failure(&self.cluster, holder, &self.node))
    }

    fn lost(&mut self, error: String, retry_in: Duration) {
        let first = self.last_error.as_deref() != Some(error.as_str());
        self.last_error = Some(error.clone());
        self.shared.update(&self.cluster, &self.node, |n| {
            n.probe_errors_total += 1;
            n.last_error = Some(error.clone());
        });
        // A node that stays unreachable says so once per distinct error, not every attempt.
        if first {
            self.shared.emit(Event::ConnectionLost {
                cluster: self.cluster.clone(),
                node: self.node.clone(),
                error,
                retry_in_ms: retry_in.as_millis() as u64,
            });
        }
    }

    async fn ping(&mut self, timeout: Duration) -> PingResult {
        let Some(conn) = self.conn.as_mut() else {
            return Err(match &self.last_error {
                Some(e) => format!("not connected: {e}"),
                None => "not connected yet".to_string(),
            });
        };
        let started = Instant::now();
        match conn.client.call_within::<Pong>(Method::Ping, timeout).await {
            Ok(pong) => Ok((pong, started.elapsed())),
            Err(e @ ClientError::Rpc(_)) => Err(format!("agent error: {e}")),
            // A late answer is skipped when it comes: the connection stays.
            Err(ClientError::Timeout { .. }) => Err(format!("timeout {}", seconds(timeout))),
            Err(e) => {
                self.conn = None;
                let message = format!("connection broke: {e}");
                self.last_error = Some(message.clone());
                Err(message)
            }
        }
    }

    fn record_ping(&mut self, ping: PingResult) {
        let ok = ping.is_ok();
        let flipped = self.threshold.record(ok);
        let misses = self.threshold.misses();
        let verdict = self.threshold.verdict();
        let (cluster, node) = (&self.cluster, &self.node);
        let event = self.shared.update(cluster, node, |n| {
            n.pings_total += 1;
            n.state = match verdict {
                Some(true) => Liveness::Up,
                Some(false) => Liveness::Down,
                None => Liveness::Unknown,
            };
            match &ping {
                Ok((pong, rtt)) => {
                    let secs = rtt.as_secs_f64();
                    n.rtt.observe(secs);
                    n.last_rtt_ms = Some(secs * 1000.0);
                    n.last_error = None;
                    n.uptime_s = Some(pong.uptime_s);
                    n.load1 = pong.load1;
                    n.gpus = Some(pong.gpus);
                    n.gpu_utilization = pong.gpu_utilization;
                    n.gpu_devices = gpu_statuses(pong, &n.sessions);
                }
                Err(why) => {
                    n.ping_failures_total += 1;
                    n.last_error = Some(why.clone());
                }
            }
            match (flipped, &ping) {
                (Some(true), Ok((pong, rtt))) => Some(Event::NodeUp {
                    cluster: cluster.clone(),
                    node: node.clone(),
                    rtt_ms: rtt.as_secs_f64() * 1000.0,
                    load1: pong.load1,
                    gpus: pong.gpus,
                }),
                (Some(false), Err(why)) => {
                    Some(Event::NodeDown { cluster: cluster.clone(), node: node.clone(), misses, last: why.clone() })
                }
                _ => None,
            }
        });
        if let Some(event) = event {
            self.shared.emit(event);
        }
        if flipped == Some(false) {
            // A node that went down gets a fresh connection: the old one may be wedged.
            self.conn = None;
            self.mark_sessions_unknown();
        }
    }

    fn mark_sessions_unknown(&mut self) {
        self.shared.update(&self.cluster, &self.node, |n| {
            for s in n.sessions.values_mut() {
                s.container = "unknown".into();
            }
        });
        for t in self.sessions.values_mut() {
            t.container = None;
        }
    }

    async fn probe_sessions(&mut self, watched: &Arc<Watched>, node_timing: &Timing) {
        let cluster_model = &watched.cluster;
        let here = watched.on(&self.node);
        let desired = &here.hashes;
        if desired.is_empty() && self.sessions.is_empty() {
            let due = self.idle_probe_at.is_none_or(|at| at <= Instant::now());
            if !due {
                return;
            }
            self.idle_probe_at = Some(Instant::now() + IDLE_PROBE_EVERY);
        }
        let now = Instant::now();
        let overrides = self.shared.options.overrides;
        let mut checks = Vec::new();
        let mut longest = Duration::ZERO;
        for s in here.checked.iter().filter_map(|&i| cluster_model.sessions.get(i)) {
            let Some(health) = &s.health else { continue };
            let timing = health_timing(cluster_model, health, &overrides);
            let track = self.track(s.name.value.as_str(), &timing);
            track.threshold.retune(timing.failure_threshold, timing.success_threshold);
            // Against the clock now, not `now`: a track made this round is due at once (`--once` has one).
            if track.next_check > Instant::now() {
                continue;
            }
            track.next_check = now + timing.interval;
            longest = longest.max(timing.timeout);
            checks.push(HealthProbe {
                session: s.name.value.to_string(),
                check: match &health.check {
                    HealthCheck::Http { port, path } => HealthCheckSpec::Http { port: *port, path: path.clone() },
                    HealthCheck::Exec(argv) => HealthCheckSpec::Exec { argv: argv.clone() },
                },
                timeout_ms: timing.timeout.as_millis() as u64,
            });
        }
        let mut keyed = if here.secret.is_empty() {
            None
        } else {
            // Bounded like every other wait of a round: a node that does not answer still gets its
            // pings counted.
            match tokio::time::timeout(node_timing.timeout, self.keyed_hashes(watched)).await {
                Ok(keyed) => keyed,
                Err(_) => {
                    self.probe_failed(format!("no key within {}", seconds(node_timing.timeout)));
                    return;
                }
            }
        };
        let Some(conn) = self.conn.as_mut() else { return };
        let asked = checks.len();
        let request = Method::Probe(Probe { cluster: self.cluster.clone(), node: self.node.clone(), checks });
        let node_timeout = node_timing.timeout;
        let reply = match conn.client.call_within::<ProbeReply>(request, longest + node_timeout).await {
            Ok(mut reply) => match crate::untrusted::check_probe(&mut reply, asked) {
                Ok(()) => reply,
                Err(why) => {
                    self.conn = None;
                    self.probe_failed(format!("its answer is not believable: {why}"));
                    return;
                }
            },
            Err(ClientError::Timeout { .. }) => {
                self.probe_failed(format!("no answer within {}", seconds(longest + node_timeout)));
                return;
            }
            Err(e) => {
                if !matches!(e, ClientError::Rpc(_)) {
                    self.conn = None;
                }
                self.probe_failed(e.to_string());
                return;
            }
        };
        if let Some(k) = keyed.as_mut() {
            k.settle(&reply.sessions);
        }
        let desired = keyed.as_ref().map_or(desired, |k| &k.hashes);
        let placed = here.on_their_devices(desired, keyed.as_ref().map(|k| &k.specs), &reply.sessions);
        let desired = &placed;
        if let Some(number) = self.truth.observe(watched, reply.generation) {
            self.follow(number, desired, node_timeout).await;
        }
        let desired = self.truth.superseded().map_or(desired, |s| &s.hashes).clone();
        self.absorb(watched, &desired, reply, node_timing);
    }

    /// Reads generation `number` from the node and lets [`Truth`] judge it against the file's `desired`
    /// hashes; says so when the node is from now on held to it.
    async fn follow(&mut self, number: u64, desired: &BTreeMap<String, String>, timeout: Duration) {
        let Some(conn) = self.conn.as_mut() else { return };
        let request = Method::GetGeneration(GetGeneration { cluster: self.cluster.clone(), number });
        let mut record = match conn.client.call_within::<GenerationRecord>(request, timeout).await {
            Ok(record) => record,
            Err(e) => {
                if !matches!(e, ClientError::Rpc(_) | ClientError::Timeout { .. }) {
                    self.conn = None;
                }
                self.probe_failed(format!("reading its generation {number} failed: {e}"));
                return;
            }
        };
        if let Err(why) = crate::untrusted::check_record(&self.cluster, &self.node, &mut record) {
            self.conn = None;
            self.probe_failed(format!("its record of generation {number} is not believable: {why}"));
            return;
        }
        if let Some(s) = self.truth.record(Landed::from(&record), desired) {
            let event = Event::Superseded {
                cluster: self.cluster.clone(),
                node: self.node.clone(),
                generation: s.generation,
                destroyed: s.destroyed,
                applied_by: s.applied_by.clone(),
                applied_at: s.applied_at.clone(),
            };
            self.shared.emit(event);
        }
    }

    /// This node's hashes with its secrets digested, from the cache when it is for this connection
    /// and file version; `None` when not connected.
    async fn keyed_hashes(&mut self, watched: &Arc<Watched>) -> Option<KeyedHashes> {
        if let Some((version, hashes)) = &self.keyed
            && Arc::ptr_eq(version, watched)
        {
            return Some(hashes.clone());
        }
        let conn = self.conn.as_mut()?;
        let hashes = KeyedHashes::fetch(watched, &self.node, conn).await;
        self.keyed = Some((watched.clone(), hashes.clone()));
        Some(hashes)
    }

    fn track(&mut self, session: &str, timing: &Timing) -> &mut SessionTrack {
        track(&mut self.sessions, self.shared.options.heal_limit, session, timing)
    }

    fn probe_failed(&mut self, error: String) {
        self.shared.update(&self.cluster, &self.node, |n| n.probe_errors_total += 1);
        self.shared.emit(Event::ProbeFailed { cluster: self.cluster.clone(), node: self.node.clone(), error });
    }

    /// Takes in one probe's reply: container states, health verdicts, drift; then heals if asked.
    fn absorb(
        &mut self,
        watched: &Arc<Watched>,
        desired: &BTreeMap<String, String>,
        reply: ProbeReply,
        timing: &Timing,
    ) {
        let drifts = drift(&self.cluster, desired, &reply.sessions, &reply.unowned);
        let observed: BTreeMap<&str, _> = reply.sessions.iter().map(|s| (s.name.as_str(), s)).collect();
        // The file's sessions on this node, then the ones only the node knows of.
        let mut names: Vec<String> = desired.keys().cloned().collect();
        names.extend(observed.keys().filter(|k| !desired.contains_key(**k)).map(|k| k.to_string()));
        let mut events = Vec::new();
        let mut statuses: BTreeMap<String, SessionStatus> = BTreeMap::new();
        let (cluster, node) = (self.cluster.clone(), self.node.clone());
        let heal_limit = self.shared.options.heal_limit;
        let heal = self.shared.options.heal;
        for name in &names {
            let (state, exit_code) = match observed.get(name.as_str()) {
                Some(s) => (s.state.as_str().to_string(), s.exit_code),
                None => ("missing".to_string(), None),
            };
            let track = track(&mut self.sessions, heal_limit, name, timing);
            if track.container.as_deref() != Some(state.as_str()) {
                let first = track.container.is_none();
                if !(first && state == "running") {
                    events.push(Event::Container {
                        cluster: cluster.clone(),
                        node: node.clone(),
                        session: name.clone(),
                        state: state.clone(),
                        exit_code,
                    });
                }
                track.container = Some(state.clone());
            }
            let new_drift = drifts.get(name).cloned();
            if new_drift != track.drift {
                match &new_drift {
                    Some(d) => {
                        events.push(Event::Drift {
                            cluster: cluster.clone(),
                            node: node.clone(),
                            session: name.clone(),
                            kind: d.kind,
                            reason: d.reason.clone(),
                        });
                        if heal && !d.healable() {
                            events.push(Event::Heal {
                                cluster: cluster.clone(),
                                node: node.clone(),
                                session: name.clone(),
                                outcome: "refused".into(),
                                detail: match d.kind {
                                    DriftKind::NotInFile => "--heal never removes anything; `bai apply` does".into(),
                                    _ => format!("not bai's to heal: {}", d.reason),
                                },
                            });
                        }
                    }
                    None => events.push(Event::DriftResolved {
                        cluster: cluster.clone(),
                        node: node.clone(),
                        session: name.clone(),
                    }),
                }
                track.drift = new_drift.clone();
            }
            let spec = observed.get(name.as_str()).and_then(|s| s.spec.as_ref());
            statuses.insert(
                name.clone(),
                SessionStatus {
                    container: state,
                    exit_code,
                    health: None,
                    drift: new_drift.map(|d| d.reason),
                    heals_total: 0,
                    devices: spec.map(|spec| spec.resources.devices.clone()).unwrap_or_default(),
                    ports: spec.map(published_ports).unwrap_or_default(),
                },
            );
        }
        let mut verdicts: BTreeMap<String, HealthStatus> = BTreeMap::new();
        for result in &reply.health {
            let Some(track) = self.sessions.get_mut(&result.session) else { continue };
            let flipped = track.threshold.record(result.healthy);
            match flipped {
                Some(true) => events.push(Event::Healthy {
                    cluster: cluster.clone(),
                    node: node.clone(),
                    session: result.session.clone(),
                    detail: result.detail.clone(),
                }),
                Some(false) => events.push(Event::Unhealthy {
                    cluster: cluster.clone(),
                    node: node.clone(),
                    session: result.session.clone(),
                    failures: track.threshold.misses(),
                    last: result.detail.clone(),
                }),
                None => {}
            }
            let verdict = match track.threshold.verdict() {
                Some(true) => Verdict::Healthy,
                Some(false) => Verdict::Unhealthy,
                None => Verdict::Unknown,
            };
            verdicts.insert(result.session.clone(), HealthStatus { verdict, detail: Some(result.detail.clone()) });
        }
        let has_health: Vec<&str> = watched
            .on(&self.node)
            .checked
            .iter()
            .filter_map(|&i| watched.cluster.sessions.get(i))
            .map(|s| s.name.value.as_str())
            .collect();
        self.shared.update(&self.cluster, &self.node, |n| {
            for (name, mut status) in statuses {
                let old = n.sessions.get(&name);
                status.heals_total = old.map_or(0, |o| o.heals_total);
                status.health = match verdicts.remove(&name) {
                    Some(v) => Some(v),
                    None if has_health.contains(&name.as_str()) => {
                        Some(old.and_then(|o| o.health.clone()).unwrap_or_default())
                    }
                    None => None,
                };
                n.sessions.insert(name, status);
            }
            n.sessions.retain(|name, _| names.contains(name));
        });
        self.sessions.retain(|name, _| names.contains(name));
        for e in events {
            self.shared.emit(e);
        }
        if self.shared.options.heal {
            self.heal(watched);
        }
    }

    /// Starts a heal of what drifted, unless one is under way (said once), the node follows another
    /// generation than the file (said once per session and generation), or the heal limit holds it back.
    fn heal(&mut self, watched: &Arc<Watched>) {
        let wanted = self.sessions.values().any(|t| t.drift.as_ref().is_some_and(Drift::healable));
        if let Some((running, since, said)) = self.heal.as_mut()
            && !running.is_finished()
        {
            if wanted && !*said && since.elapsed() >= SLOW_HEAL {
                *said = true;
                let waiting = self
                    .sessions
                    .iter()
                    .filter(|(_, t)| t.drift.as_ref().is_some_and(Drift::healable))
                    .map(|(name, _)| name.clone())
                    .collect();
                let event = Event::HealRunning {
                    cluster: self.cluster.clone(),
                    node: self.node.clone(),
                    running_s: since.elapsed().as_secs(),
                    waiting,
                };
                self.shared.emit(event);
            }
            return;
        }
        let now = Instant::now();
        let mut chosen: BTreeMap<String, Drift> = BTreeMap::new();
        let mut events = Vec::new();
        let following = self.truth.superseded().map(|s| (s.generation, s.applied_by.clone()));
        for (name, track) in &mut self.sessions {
            let Some(d) = &track.drift else { continue };
            if !d.healable() {
                continue;
            }
            if let Some((generation, by)) = &following {
                if track.refused_for != Some(*generation) {
                    track.refused_for = Some(*generation);
                    events.push(Event::Heal {
                        cluster: self.cluster.clone(),
                        node: self.node.clone(),
                        session: name.clone(),
                        outcome: "refused".into(),
                        detail: format!(
                            "the node follows generation {generation} (by {by}), not the watched file; \
                             `bai apply` the lab that should run there"
                        ),
                    });
                }
                continue;
            }
            if track.limit.try_take(now) {
                track.held_back_reported = false;
                chosen.insert(name.clone(), d.clone());
            } else if !track.held_back_reported {
                track.held_back_reported = true;
                let limit = self.shared.options.heal_limit;
                let wait = track.limit.free_at().map_or(0, |t| t.saturating_duration_since(now).as_secs());
                events.push(Event::Heal {
                    cluster: self.cluster.clone(),
                    node: self.node.clone(),
                    session: name.clone(),
                    outcome: "held_back".into(),
                    detail: format!("{limit} heals in the last minute (the limit); next one possible in {wait}s"),
                });
            }
        }
        for e in events {
            self.shared.emit(e);
        }
        if chosen.is_empty() {
            return;
        }
        let (watched, node, shared) = (watched.clone(), self.node.clone(), self.shared.clone());
        let expected = self.truth.expected();
        let task = tokio::spawn(async move { heal::heal(&watched, &node, chosen, expected, &shared).await });
        self.heal = Some((task, Instant::now(), false));
    }
}

fn track<'a>(
    sessions: &'a mut BTreeMap<String, SessionTrack>,
    heal_limit: usize,
    session: &str,
    timing: &Timing,
) -> &'a mut SessionTrack {
    sessions.entry(session.to_string()).or_insert_with(|| SessionTrack {
        threshold: Threshold::new(timing.failure_threshold, timing.success_threshold),
        next_check: Instant::now(),
        container: None,
        drift: None,
        limit: HealLimit::new(heal_limit),
        held_back_reported: false,
        refused_for: None,
    })
}

/// The ports a session's container publishes, as its recorded spec says; a publication without its port
/// (a spec no bai writes) is left out rather than shown half.
fn published_ports(spec: &crate::state::spec::SessionSpec) -> Vec<PublishedPort> {
    spec.published
        .iter()
        .filter_map(|(name, p)| {
            Some(PublishedPort {
                name: crate::untrusted::text(name),
                port: *spec.ports.get(name)?,
                host_address: crate::untrusted::text(&p.address),
                host_port: p.port,
            })
        })
        .collect()
}

/// The GPUs a ping reported, each with the session whose container holds it (by UUID, or by index where
/// the session was placed without the inventory). Node-supplied text is bounded and cleaned here: the
/// ping is the one reply the watcher keeps without another check.
fn gpu_statuses(pong: &Pong, sessions: &BTreeMap<String, SessionStatus>) -> Vec<crate::watch::status::GpuStatus> {
    pong.devices
        .iter()
        .take(crate::untrusted::MAX_ENTRIES)
        .map(|g| {
            let session = sessions
                .iter()
                .find(|(_, s)| s.devices.iter().any(|d| crate::gpu::names(d, &g.uuid, g.index)))
                .map(|(name, _)| name.clone());
            crate::watch::status::GpuStatus {
                index: g.index,
                uuid: crate::untrusted::text(&g.uuid),
                name: crate::untrusted::text(&g.name),
                memory_total: g.memory_total,
                memory_used: g.memory_used,
                utilization: g.utilization.filter(|u| *u <= 100),
                session,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::GpuUse;

    #[test]
    fn a_gpu_is_held_by_the_session_whose_devices_name_it() {
        let gpu = |index: u32| GpuUse {
            index,
            uuid: format!("GPU-{index}"),
            name: "H100\u{1b}[2J".into(),
            memory_total: 1 << 30,
            memory_used: None,
            utilization: Some(if index == 2 { 250 } else { 10 }),
        };
        let pong =
            Pong { uptime_s: 1, load1: None, gpus: 3, gpu_utilization: None, devices: (0..3).map(gpu).collect() };
        let mut sessions = BTreeMap::new();
        sessions
            .insert("by-uuid".to_string(), SessionStatus { devices: vec!["GPU-0".into()], ..SessionStatus::default() });
        // Placed without the inventory: by index.
        sessions
            .insert("by-index".to_string(), SessionStatus { devices: vec!["1".into()], ..SessionStatus::default() });
        let got = gpu_statuses(&pong, &sessions);
        let holders: Vec<Option<&str>> = got.iter().map(|g| g.session.as_deref()).collect();
        assert_eq!(holders, [Some("by-uuid"), Some("by-index"), None]);
        // Node text is escaped; a utilisation past 100 % is not believed.
        assert_eq!(got[0].name, "H100\\u{1b}[2J");
        assert_eq!(got[2].utilization, None);
    }

    #[test]
    fn published_ports_come_from_the_recorded_spec() {
        use crate::model::Publish;
        let spec = crate::state::spec::SessionSpec {
            ports: BTreeMap::from([("web".into(), 8080), ("ssh".into(), 22)]),
            published: BTreeMap::from([
                ("web".into(), Publish { address: "0.0.0.0".into(), port: 18080 }),
                ("gone".into(), Publish { address: "127.0.0.1".into(), port: 1 }),
            ]),
            ..crate::state::spec::SessionSpec::default()
        };
        let got = published_ports(&spec);
        let want = PublishedPort { name: "web".into(), port: 8080, host_address: "0.0.0.0".into(), host_port: 18080 };
        assert_eq!(got, [want]);
    }
}
