//! Converging (`bai apply`, `bai apply PLAN`, `bai destroy`): observe every selected node holding its
//! lease, plan, show the plan, confirm, execute it as a DAG walk, record the new generation, and, with
//! `--confirm-healthy`, watch the changed sessions and roll back the nodes of an unhealthy one. Destroy
//! is the same walk towards an empty lab; a saved plan is carried out exactly as saved, or refused as
//! stale naming what moved.

use std::path::Path;
use std::time::Duration;

use crate::diagnostic::Severity;
use crate::failure::Failure;
use crate::fleet::execute::{self, ChangeContext, ChangeOutcome, ChangeResult};
use crate::fleet::secrets::SecretValues;
use crate::fleet::sources::Sources;
use crate::generation::RecordExtras;
use crate::graph::{ResourceGraph, build_graph};
use crate::model::Config;
use crate::plan::diff;
use crate::plan::saved::SavedPlan;
use crate::reconcile::confirm_healthy::{Applied, Gate, confirm_or_roll_back};
use crate::reconcile::record::{self, Generation, RunStamp};
use crate::reconcile::{self, Engine, KeyMaking, Observation, Reporter, lockfile, saved_plan};
use crate::source::SourceMap;
use crate::state::ClusterState;

/// Where a run converges to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The lab as written (or a saved plan of it).
    Apply,
    /// Nothing: everything bai owns for the lab's clusters goes.
    Destroy,
}

impl Goal {
    /// What the run asks before it goes ahead.
    pub fn verb(self) -> &'static str {
        match self {
            Goal::Apply => "apply",
            Goal::Destroy => "destroy",
        }
    }
}

/// What a converging run is asked.
pub struct ConvergeRequest<'a> {
    pub goal: Goal,
    pub config: &'a Config,
    /// The lab's files as loaded: what a saved plan and the generation record fingerprint.
    pub sources: &'a SourceMap,
    /// The lab file.
    pub file: &'a Path,
    /// `bai apply PLAN`: the plan to carry out, and the file it came from.
    pub saved: Option<&'a SavedPlan>,
    pub plan_file: &'a Path,
    pub selectors: &'a [String],
    /// Whether the lock loses the entries of clusters the lab no longer has (not when a run acts on one
    /// cluster of several).
    pub prune_lock: bool,
    pub update_lock: bool,
    /// Go ahead without asking.
    pub yes: bool,
    pub allow_data_loss: bool,
    pub confirm_healthy: Option<Duration>,
}

/// Carries out `request`; true when everything asked was done.
pub fn converge(engine: &Engine, request: &ConvergeRequest<'_>, reporter: &dyn Reporter) -> bool {
    let (goal, file, saved) = (request.goal, request.file, request.saved);
    // Why a saved plan is stale: the configuration first; the touched nodes are still looked at, so
    // that the refusal names everything that moved.
    let mut stale = match &saved {
        Some(saved) => saved_plan::check_config(saved, &saved_plan::config_of(request.sources, file)),
        None => Vec::new(),
    };
    // The lock is checked before any node is reached: a mismatch changes nothing anywhere.
    let mut lock = match goal {
        Goal::Apply => match lockfile::prepare(
            file,
            request.config,
            &engine.options.agent_binary,
            request.prune_lock,
            request.update_lock,
            reporter,
        ) {
            Ok(prepared) => Some(prepared),
            Err(_) => return false,
        },
        Goal::Destroy => None,
    };
    let clusters = &request.config.clusters;
    // Node images the lock says were made from other content: the plan replaces them.
    let mut lock_stale = Vec::new();
    // Observe everything first, holding each node's lease, so that the plan shown is the plan executed.
    let mut reached: Vec<Observation> = Vec::new();
    let mut prepared: Vec<(ClusterState, ClusterState, ResourceGraph, SecretValues)> = Vec::new();
    let mut unresolved_secrets = false;
    let mut unplaceable = false;
    for c in clusters {
        let mut r = match &saved {
            // Only the nodes the plan changes: the others may change, or be down, without harm.
            Some(s) => {
                let touched = saved_plan::touched(s, c.name.value.as_str());
                if touched.is_empty() { Observation::default() } else { engine.reach(c, &touched, true) }
            }
            None => engine.reach(c, request.selectors, true),
        };
        reporter.node_failures(&r.failures);
        reporter.failures(&r.conflicts());
        if let Some(s) = &saved {
            stale.extend(saved_plan::check_nodes(engine, s, c.name.value.as_str(), &mut r));
        }
        let mut observed = r.observed(c);
        if let Some(entries) = lock.as_ref().and_then(|l| l.update.lock.clusters.get(c.name.value.as_str())) {
            lock_stale.extend(lockfile::mark_stale(&mut observed, entries, &r.snapshots));
        }
        let (desired, secrets) = match goal {
            Goal::Apply => {
                // Secrets are read once and digested under each node's key (made now if the node has
                // none) before the diff, so that a changed value plans a replace; one that cannot be read
                // stops the run before anything changes.
                let (placed, placement) = ClusterState::desired_on(c, &observed);
                reporter.failures(&placement.failures());
                unplaceable |= placement.is_refused();
                let wanted = placed.restrict(&r.reachable());
                let desired = engine.block_on(reconcile::desired(&c.root, wanted, &mut r, &observed, KeyMaking::Make));
                reporter.failures(&desired.unresolved.failures(Severity::Error));
                unresolved_secrets |= !desired.unresolved.is_empty();
                (desired.state, desired.secrets)
            }
            Goal::Destroy => {
                (kept_by_destroy(c, &observed, request.allow_data_loss, reporter), SecretValues::default())
            }
        };
        let graph = match goal {
            Goal::Apply => build_graph(c),
            Goal::Destroy => ResourceGraph::default(),
        };
        prepared.push((desired, observed, graph, secrets));
        reached.push(r);
    }
    if unplaceable {
        reporter.fail(Failure::error(
            "bai::gpu::unplaceable",
            "nothing was changed: every GPU session must be given its devices to apply",
        ));
        return false;
    }
    if unresolved_secrets {
        reporter.fail(Failure::error(
            "bai::secret::unresolved",
            "nothing was changed: every secret must be readable on the controller to apply",
        ));
        return false;
    }
    let unreachable: usize = reached.iter().map(|r| r.failures.len()).sum();
    let triples: Vec<_> = prepared.iter().map(|(d, o, g, _)| (d, o, g)).collect();
    let mut plan = diff(&triples);
    lockfile::explain_stale(&mut plan, &lock_stale);
    if let Some(s) = &saved {
        if stale.is_empty() && !crate::plan::saved::same_changes(&s.plan, &plan) {
            stale.extend(crate::plan::saved::plan_differences(&s.plan, &plan));
        }
        if !stale.is_empty() {
            reporter.fail(saved_plan::refusal(request.plan_file, &stale));
            return false;
        }
        // Carried out exactly as saved, with the states the plan made now holds for the same changes.
        plan = crate::plan::saved::carry_states(&s.plan, &plan);
    }
    reporter.plan(&plan);
    if plan.summary().is_empty() {
        if unreachable > 0 {
            return false;
        }
        return lock
            .as_mut()
            .is_none_or(|l| lockfile::finish(engine, l, clusters, &mut reached, false, reporter).is_ok());
    }
    if !request.yes && !reporter.confirm(goal.verb()) {
        return false;
    }
    let mut results: Vec<ChangeResult> = Vec::new();
    reporter.executing(&plan);
    // Generations: every node a run touched records this run's number (see `record::record`).
    let mut stamp = RunStamp::new(request.sources, file);
    stamp.meta.plan_id = saved.as_ref().map(|s| s.id.clone());
    let mut recorded = true;
    let mut applied: Vec<Applied> = Vec::new();
    for ((c, r), (desired, _, graph, secrets)) in clusters.iter().zip(reached.iter_mut()).zip(&prepared) {
        let changes: Vec<_> = plan.changes.iter().filter(|ch| ch.cluster == c.name.value).cloned().collect();
        let entries = lock.as_ref().and_then(|l| l.update.lock.clusters.get(c.name.value.as_str()));
        let sources = Sources::new(c);
        let input = ChangeContext {
            cluster: c,
            graph,
            allow_data_loss: request.allow_data_loss,
            parallel: engine.parallel,
            lock: entries,
            secrets,
            sources: &sources,
        };
        let report = |result: &ChangeResult| reporter.change(result);
        let done = engine.block_on(execute::execute(&input, &changes, &mut r.conns, &report));
        // Destroy records an empty generation: a later rollback can bring the cluster back. The sources
        // are hashed only when some node of the cluster records a generation.
        let extras = match goal {
            Goal::Apply if !record::touched(&done).is_empty() => {
                RecordExtras::from_cluster(c, &stamp.lab_dir, &sources)
            }
            Goal::Apply | Goal::Destroy => RecordExtras::default(),
        };
        let number = record::current(r).unwrap_or(0) + 1;
        let generation = Generation { cluster: c, desired, extras: &extras, number, meta: &stamp.meta };
        let not_recorded = record::record(engine, &generation, &mut r.conns, &done, reporter);
        recorded &= not_recorded.is_empty();
        reporter.failures(&not_recorded);
        applied.push(Applied { sessions: crate::watch::confirm::sessions_to_confirm(c, &done), number });
        results.extend(done);
    }
    let failures: Vec<_> = reached.iter().flat_map(|r| r.failures.clone()).collect();
    reporter.executed(&plan, &results, &failures);
    let failed = results.iter().any(|r| !matches!(r.outcome, ChangeOutcome::Done(_)));
    if failed || !failures.is_empty() || !recorded {
        return false;
    }
    if let (Goal::Apply, Some(window)) = (goal, request.confirm_healthy) {
        let gate = Gate { window, stamp: &stamp, allow_data_loss: request.allow_data_loss };
        if !confirm_or_roll_back(engine, clusters, &mut reached, &applied, &gate, reporter) {
            return false;
        }
    }
    lock.as_mut().is_none_or(|l| lockfile::finish(engine, l, clusters, &mut reached, true, reporter).is_ok())
}

impl<'a> ConvergeRequest<'a> {
    /// Everything `loaded` (from `file`) holds, on every node, without asking: what the engine's tests run.
    #[cfg(test)]
    pub fn everything(goal: Goal, loaded: &'a crate::config::Loaded, file: &'a Path) -> Self {
        ConvergeRequest {
            goal,
            config: &loaded.config,
            sources: &loaded.sources,
            file,
            saved: None,
            plan_file: file,
            selectors: &[],
            prune_lock: true,
            update_lock: false,
            yes: true,
            allow_data_loss: false,
            confirm_healthy: None,
        }
    }
}

/// What a destroy leaves: nothing, but for vfolders that hold data when data may not be lost, and the
/// agent of their nodes (which manages them). A destroy without `--allow-data-loss` thus ends cleanly,
/// saying what it kept and how to let it go too, rather than failing on every such vfolder.
fn kept_by_destroy(
    cluster: &crate::model::Cluster,
    observed: &ClusterState,
    allow_data_loss: bool,
    reporter: &dyn Reporter,
) -> ClusterState {
    let mut kept = ClusterState::empty(cluster.name.value.clone());
    if allow_data_loss {
        return kept;
    }
    for (name, vfolder) in observed.vfolders.iter().filter(|(_, v)| v.empty == Some(false)) {
        kept.vfolders.insert(name.clone(), vfolder.clone());
        if let Some(node) = observed.nodes.get(&vfolder.node) {
            kept.nodes.insert(vfolder.node.clone(), node.clone());
        }
        reporter.failures(&[Failure::warning(
            "bai::destroy::kept_data",
            format!(
                "vfolder `{name}` on `{}` holds data: it is kept, and bai's agent on that node with it",
                vfolder.node
            ),
        )
        .help("`bai destroy --allow-data-loss FILE` moves it aside too (into the node's tombstones, never erased)")]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::fleet::scripted::{self, Agents, Answer, LAB, Log};
    use crate::reconcile::report::Recorded;

    struct Run {
        dir: tempfile::TempDir,
        log: Log,
        reported: Recorded,
        done: bool,
    }

    /// Converges the lab of `file` through `options`.
    fn converge_through(options: crate::fleet::ConnectOptions, goal: Goal, file: &Path) -> (bool, Recorded) {
        let loaded = crate::config::load(file);
        let engine = Engine::with_options(options, 4).expect("engine");
        let request = ConvergeRequest::everything(goal, &loaded, file);
        let reported = Recorded::default();
        let done = converge(&engine, &request, &reported);
        (done, reported)
    }

    #[test]
    fn through_the_real_agent_an_apply_converges_records_and_a_destroy_takes_it_all_away() {
        use crate::agent::containers::InMemory;
        use crate::fleet::in_process::InProcess;
        let (dir, file, _) = scripted::lab(LAB);
        let containers = InMemory::default();
        let nodes = dir.path().join("nodes");
        let options = || scripted::options_with(InProcess { root: nodes.clone(), engine: containers.clone() });

        let (done, reported) = converge_through(options(), Goal::Apply, &file);
        let lines = reported.lines();
        assert!(done, "{lines:?}");
        assert_eq!(lines.first().map(String::as_str), Some("plan 8 changes"), "{lines:?}");
        assert_eq!(containers.running(), ["t/after-a on b", "t/on-a on a", "t/on-b on b"]);
        let vfolder = nodes.join("a/.local/share/bai/vfolders/va");
        assert!(vfolder.is_dir(), "the agent made the vfolder on a");
        assert!(nodes.join("a/bai/clusters").exists() || nodes.join("a/bai").is_dir(), "a's agent home");

        // Observed through the agent's records and the engine: nothing left to do.
        let (done, reported) = converge_through(options(), Goal::Apply, &file);
        assert!(done);
        assert_eq!(reported.lines(), ["plan 0 changes"]);

        let (done, reported) = converge_through(options(), Goal::Destroy, &file);
        let lines = reported.lines();
        assert!(done, "{lines:?}");
        assert_eq!(lines.first().map(String::as_str), Some("plan 8 changes"), "{lines:?}");
        assert!(containers.running().is_empty());
        assert!(!vfolder.exists(), "the empty vfolder is removed");
        assert!(lines.iter().any(|l| l.starts_with("note Recorded generation 2 of cluster `t`")), "{lines:?}");
    }

    /// Converges [`LAB`] over scripted agents answering as `script` says.
    fn converge_lab(
        goal: Goal,
        yes: bool,
        go_ahead: bool,
        script: impl Fn(&str, &'static str, &str) -> Answer + Send + Sync + 'static,
    ) -> Run {
        let (dir, file, loaded) = scripted::lab(LAB);
        let log = Log::default();
        let agents = Agents { log: log.clone(), script: Arc::new(script) };
        let engine = Engine::with_options(scripted::options_with(agents), 4).expect("engine");
        let request = ConvergeRequest { yes, ..ConvergeRequest::everything(goal, &loaded, &file) };
        let reported = Recorded { go_ahead, ..Recorded::default() };
        let done = converge(&engine, &request, &reported);
        Run { dir, log, reported, done }
    }

    fn has(lines: &[String], line: &str) -> bool {
        lines.iter().any(|l| l == line)
    }

    #[test]
    fn an_apply_reaches_plans_executes_records_and_locks_through_the_engine() {
        let run = converge_lab(Goal::Apply, true, false, |_, _, _| Answer::Ok(Duration::ZERO));
        let reported = run.reported.lines();
        assert!(run.done, "{reported:?}");
        assert_eq!(reported.first().map(String::as_str), Some("plan 8 changes"), "{reported:?}");
        assert!(!reported.iter().any(|l| l.starts_with("confirm")), "--yes asks nothing: {reported:?}");
        let made = ["node:a", "node:b", "image:a/slow", "image:b/fast", "vfolder:va", "session:on-a", "session:on-b"];
        for id in made.into_iter().chain(["session:after-a"]) {
            assert!(has(&reported, &format!("change {id} done")), "{id}: {reported:?}");
        }
        assert!(reported.iter().any(|l| l.starts_with("note Recorded generation 1 of cluster `t` on a, b")));
        let calls = run.log.lines();
        for node in ["a", "b"] {
            // Reached without the lease, then with it; observed; recorded.
            assert_eq!(calls.iter().filter(|c| *c == &format!("{node} hello ")).count(), 2, "{calls:?}");
            assert!(has(&calls, &format!("{node} observe ")), "{calls:?}");
            assert!(has(&calls, &format!("{node} record_generation ")), "{calls:?}");
        }
        assert!(has(&calls, "a create_session on-a") && has(&calls, "b create_session on-b"), "{calls:?}");
        assert!(run.dir.path().join("bai.lock").is_file(), "a successful apply writes the lock");
    }

    #[test]
    fn a_failed_image_fails_the_run_skips_its_session_and_the_other_node_carries_on() {
        let run = converge_lab(Goal::Apply, true, false, |node, method, _| match (node, method) {
            ("a", "ensure_image") => Answer::Fail("no space left on device".into()),
            _ => Answer::Ok(Duration::ZERO),
        });
        let reported = run.reported.lines();
        assert!(!run.done, "{reported:?}");
        assert!(has(&reported, "change image:a/slow failed bai::agent::failed"), "{reported:?}");
        assert!(has(&reported, "change session:on-a skipped"), "{reported:?}");
        assert!(has(&reported, "change session:after-a skipped"), "it depends on on-a: {reported:?}");
        assert!(has(&reported, "change session:on-b done"), "{reported:?}");
        let calls = run.log.lines();
        assert!(!has(&calls, "a create_session on-a"), "{calls:?}");
        // Both nodes record what was done on them (a was enrolled); the lock waits for a clean run.
        assert!(has(&calls, "a record_generation ") && has(&calls, "b record_generation "), "{calls:?}");
        assert!(!run.dir.path().join("bai.lock").exists());
    }

    #[test]
    fn without_yes_the_reporter_is_asked_and_a_refusal_changes_nothing() {
        let run = converge_lab(Goal::Apply, false, false, |_, _, _| Answer::Ok(Duration::ZERO));
        let reported = run.reported.lines();
        assert!(!run.done);
        assert_eq!(reported, ["plan 8 changes", "confirm apply"], "{reported:?}");
        let calls = run.log.lines();
        assert!(calls.iter().all(|c| c.ends_with(" hello ") || c.ends_with(" observe ")), "{calls:?}");
    }

    #[test]
    fn an_unreachable_node_is_reported_and_the_reachable_one_converges() {
        let run = converge_lab(Goal::Apply, true, false, |node, method, _| match (node, method) {
            ("b", "hello") => Answer::HangUp,
            _ => Answer::Ok(Duration::ZERO),
        });
        let reported = run.reported.lines();
        assert!(!run.done, "an unreachable node fails the run: {reported:?}");
        assert!(
            reported.iter().any(|l| l.starts_with("failure bai::agent::closed: node `b` unreachable")),
            "{reported:?}"
        );
        assert!(has(&reported, "change session:on-a done"), "{reported:?}");
        assert!(!reported.iter().any(|l| l.contains("on-b")), "b is not planned: {reported:?}");
        assert!(has(&reported, "change vfolder:va done"), "{reported:?}");
    }

    #[test]
    fn a_destroy_plans_nothing_on_empty_nodes() {
        let run = converge_lab(Goal::Destroy, true, false, |_, _, _| Answer::Ok(Duration::ZERO));
        let reported = run.reported.lines();
        assert!(run.done, "{reported:?}");
        assert_eq!(reported, ["plan 0 changes"], "{reported:?}");
        assert!(!run.dir.path().join("bai.lock").exists(), "destroy keeps no lock");
    }
}
