//! Lowering: a parsed KDL document becomes typed model items, every value keeping its span.
//!
//! One function per kind of node. Each reports what is wrong where it was written and goes on, so that a
//! single run shows every mistake in the file. Includes stay as [`Item::Include`] here: the loader resolves
//! them (it is the part that reads files) and splices the included items in before [`assemble`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};

use crate::config::reader::{Args, Ctx, NodeSpec, Reader};
use crate::diagnostic::{Code, Problem};
use crate::model::{
    Cluster, ClusterName, EnvValue, EnvVar, GenerationSettings, Health, HealthCheck, Image, ImageName, ImageSource,
    Mount, Network, Node, NodeName, Permission, Port, ProbeSettings, Publish, Resources, Restart, Session, SessionName,
    SshSettings, Timeouts, Ulimit, User, Vfolder, VfolderName,
};
use crate::source::{Loc, Spanned};
use crate::suggest;

/// One child of a cluster block, from the cluster's own file or an included one.
#[derive(Debug, Clone)]
pub enum Item {
    Ssh(SshSettings, Loc),
    Agent(Option<Spanned<PathBuf>>, Loc),
    Probe(ProbeSettings, Loc),
    Timeouts(Timeouts, Loc),
    Generations(GenerationSettings, Loc),
    Node(Node),
    Image(Image),
    Vfolder(Vfolder),
    Session(Session),
    Include(Spanned<String>),
}

/// A cluster block before its includes are resolved.
#[derive(Debug, Clone)]
pub struct RawCluster {
    pub name: Spanned<ClusterName>,
    pub loc: Loc,
    pub items: Vec<Item>,
}

const CLUSTER: NodeSpec = spec("cluster", &[], Args::One("a cluster name"), true);
const SSH: NodeSpec =
    spec("ssh", &["user", "port", "identity", "known-hosts", "connect-timeout", "jump"], Args::None, false);
const AGENT: NodeSpec = spec("agent", &["binary"], Args::None, false);
const PROBE: NodeSpec =
    spec("probe", &["interval", "timeout", "failure-threshold", "success-threshold"], Args::None, false);
const GENERATIONS: NodeSpec = spec("generations", &["keep"], Args::None, false);
const TIMEOUTS: NodeSpec = spec("timeouts", &["observe", "change", "image"], Args::None, false);
const INCLUDE: NodeSpec = spec("include", &[], Args::One("a path or glob"), false);
const NODE: NodeSpec = spec("node", &["address", "local"], Args::One("a node name"), true);
const GPUS: NodeSpec = spec("gpus", &[], Args::One("a GPU count"), false);
const LABELS: NodeSpec = NodeSpec { free_props: true, ..spec("labels", &[], Args::None, false) };
const VFOLDER_ROOT: NodeSpec = spec("vfolder-root", &[], Args::One("a directory"), false);
const IMAGE: NodeSpec = spec("image", &["ref"], Args::One("an image name"), true);
const DIGEST: NodeSpec = spec("digest", &[], Args::One("a digest"), false);
const MIN_GPUS: NodeSpec = spec("min-gpus", &[], Args::One("a GPU count"), false);
const BUILD: NodeSpec = spec("build", &["context", "dockerfile"], Args::None, false);
const ARCHIVE: NodeSpec = spec("archive", &[], Args::One("a tarball path"), false);
const VFOLDER: NodeSpec = spec("vfolder", &["node", "permission", "quota"], Args::One("a vfolder name"), false);
const SESSION: NodeSpec = spec("session", &["image", "node"], Args::One("a session name"), true);
const RESOURCES: NodeSpec = spec("resources", &["cpus", "memory", "gpus", "gpu-devices", "mig"], Args::None, false);
const SHM_SIZE: NodeSpec = spec("shm-size", &[], Args::One("a size"), false);
const ULIMIT: NodeSpec = spec("ulimit", &Ulimit::NAMES, Args::None, false);
const USER: NodeSpec = spec("user", &["uid", "gid"], Args::None, false);
const NETWORK: NodeSpec = spec("network", &[], Args::One("a network mode"), false);
const ENV_MAP: NodeSpec = NodeSpec { free_props: true, ..spec("env", &[], Args::None, false) };
const ENV_REF: NodeSpec = spec("env", &["from-env", "from-file"], Args::One("a variable name"), false);
const MOUNT: NodeSpec = spec("mount", &["alias", "readonly"], Args::One("a vfolder name"), false);
const COMMAND: NodeSpec = spec("command", &[], Args::Many("a program and its arguments"), false);
const PORT: NodeSpec = NodeSpec { free_props: true, ..spec("port", &[], Args::None, false) };
const HEALTH: NodeSpec = spec(
    "health",
    &["http", "path", "interval", "timeout", "failure-threshold", "success-threshold"],
    Args::Any,
    false,
);
const DEPENDS_ON: NodeSpec = spec("depends-on", &[], Args::Many("a session name"), false);
const RESTART: NodeSpec = spec("restart", &[], Args::One("a restart policy"), false);

const fn spec(kind: &'static str, props: &'static [&'static str], args: Args, children: bool) -> NodeSpec {
    NodeSpec { kind, props, args, free_props: false, children }
}

const CLUSTER_CHILDREN: &[&str] =
    &["ssh", "agent", "probe", "timeouts", "generations", "include", "node", "image", "vfolder", "session"];
const NODE_CHILDREN: &[&str] = &["ssh", "gpus", "labels", "vfolder-root", "probe", "timeouts"];
const IMAGE_CHILDREN: &[&str] = &["digest", "min-gpus", "build", "archive"];
const SESSION_CHILDREN: &[&str] = &[
    "resources",
    "env",
    "mount",
    "command",
    "port",
    "health",
    "depends-on",
    "restart",
    "shm-size",
    "ulimit",
    "user",
    "network",
];

fn unknown_child(ctx: &mut Ctx, node: &KdlNode, parent: &str, known: &[&str]) {
    let name = node.name().value();
    let where_ = if parent.is_empty() { "at the top level".to_string() } else { format!("in `{parent}`") };
    let help = suggest::help_for(name, known.iter().copied(), "nodes");
    ctx.push(
        Problem::error(Code::UnknownNode, format!("unknown node `{name}` {where_}"))
            .primary(ctx.loc(node.name().span()), "unknown node")
            .help_opt(help),
    );
}

/// Reports a second `resources`, `gpus`, … where only one is allowed.
fn once(ctx: &mut Ctx, seen: &mut Vec<(String, Loc)>, node: &KdlNode, parent: &str) -> bool {
    let name = node.name().value();
    let here = ctx.loc(node.name().span());
    if let Some((_, first)) = seen.iter().find(|(n, _)| n == name) {
        ctx.push(
            Problem::error(Code::DuplicateChild, format!("`{name}` is given twice in `{parent}`"))
                .label(*first, "first given here")
                .primary(here, "given again here")
                .help(format!("merge them into one `{name}` node")),
        );
        return false;
    }
    seen.push((name.to_string(), here));
    true
}

/// The name argument of a named node (`node "gpu-01"`), when it is a string.
fn name_arg(ctx: &mut Ctx, r: &Reader<'_>, kind: &str) -> Option<Spanned<String>> {
    let entry = r.arg(0)?;
    ctx.string(entry, &format!("{kind} name"))
}

/// Lowers a top-level file: only `cluster` blocks may stand there.
pub fn lower_top(doc: &KdlDocument, ctx: &mut Ctx) -> Vec<RawCluster> {
    let mut clusters = Vec::new();
    for node in doc.nodes() {
        if node.name().value() != "cluster" {
            unknown_child(ctx, node, "", &["cluster"]);
            if CLUSTER_CHILDREN.contains(&node.name().value())
                && let Some(last) = ctx.problems.last_mut()
            {
                last.help = Some(format!("put `{}` inside a `cluster \"…\" {{ }}` block", node.name().value()));
            }
            continue;
        }
        let r = ctx.open(node, &CLUSTER);
        let Some(name) = name_arg(ctx, &r, "cluster") else { continue };
        let items = lower_items(r.children(), ctx, false);
        clusters.push(RawCluster {
            name: Spanned::new(ClusterName(name.value), name.loc),
            loc: ctx.loc(node.name().span()),
            items,
        });
    }
    clusters
}

/// Lowers an included file: the children of a cluster, without the `cluster` wrapper.
pub fn lower_fragment(doc: &KdlDocument, ctx: &mut Ctx) -> Vec<Item> {
    lower_items(doc.nodes(), ctx, true)
}

fn lower_items(nodes: &[KdlNode], ctx: &mut Ctx, included: bool) -> Vec<Item> {
    let mut items = Vec::with_capacity(nodes.len());
    for node in nodes {
        let item = match node.name().value() {
            "cluster" if included => {
                ctx.push(
                    Problem::error(Code::IncludeClusterInInclude, "an included file cannot declare a `cluster`")
                        .primary(ctx.loc(node.name().span()), "cluster block in an included file")
                        .help("an included file holds the children of the cluster that includes it: remove the `cluster` wrapper"),
                );
                None
            }
            "ssh" => Some(Item::Ssh(lower_ssh(ctx, node), ctx.loc(node.name().span()))),
            "agent" => {
                let r = ctx.open(node, &AGENT);
                let binary = r.prop("binary").and_then(|e| ctx.string(e, "binary"));
                let binary = binary.map(|b| Spanned::new(ctx.resolve_path(&b.value), b.loc));
                Some(Item::Agent(binary, ctx.loc(node.name().span())))
            }
            "probe" => Some(Item::Probe(lower_probe(ctx, node), ctx.loc(node.name().span()))),
            "timeouts" => Some(Item::Timeouts(lower_timeouts(ctx, node), ctx.loc(node.name().span()))),
            "generations" => Some(Item::Generations(lower_generations(ctx, node), ctx.loc(node.name().span()))),
            "include" => {
                let r = ctx.open(node, &INCLUDE);
                r.arg(0).and_then(|e| ctx.string(e, "include path")).map(Item::Include)
            }
            "node" => lower_node(ctx, node).map(Item::Node),
            "image" => lower_image(ctx, node).map(Item::Image),
            "vfolder" => lower_vfolder(ctx, node).map(Item::Vfolder),
            "session" => lower_session(ctx, node).map(Item::Session),
            _ => {
                unknown_child(ctx, node, "cluster", CLUSTER_CHILDREN);
                None
            }
        };
        items.extend(item);
    }
    items
}

fn lower_ssh(ctx: &mut Ctx, node: &KdlNode) -> SshSettings {
    let r = ctx.open(node, &SSH);
    let mut ssh = SshSettings::default();
    for entry in r.props() {
        match entry.name().map(|n| n.value()).unwrap_or_default() {
            "user" => ssh.user = ctx.string(entry, "user"),
            "port" => {
                ssh.port = ctx.int(entry, "port", 1, 65535).map(|p| Spanned::new(p.value as u16, p.loc));
            }
            "identity" => ssh.identity = ctx.string(entry, "identity"),
            "known-hosts" => ssh.known_hosts = ctx.string(entry, "known-hosts"),
            "connect-timeout" => ssh.connect_timeout = ctx.duration(entry, "connect-timeout"),
            "jump" => ssh.jump = ctx.string(entry, "jump").and_then(|text| jump(ctx, text)),
            _ => {}
        }
    }
    ssh
}

/// `jump="…"` as hops; a malformed value is reported at it.
fn jump(ctx: &mut Ctx, text: Spanned<String>) -> Option<Spanned<Vec<crate::jump::JumpHost>>> {
    match crate::jump::parse_jumps(&text.value) {
        Ok(hops) => Some(Spanned::new(hops, text.loc)),
        Err(e) => {
            ctx.push(
                Problem::error(Code::Jump, format!("invalid `jump`: {}", e.message))
                    .primary(text.loc, "not a jump host list")
                    .help(crate::jump::JUMP_HELP),
            );
            None
        }
    }
}

fn lower_probe(ctx: &mut Ctx, node: &KdlNode) -> ProbeSettings {
    let r = ctx.open(node, &PROBE);
    probe_props(ctx, &r)
}

fn probe_props(ctx: &mut Ctx, r: &Reader<'_>) -> ProbeSettings {
    let mut probe = ProbeSettings::default();
    for entry in r.props() {
        let threshold =
            |ctx: &mut Ctx, what| ctx.int(entry, what, 1, 1000).map(|v| Spanned::new(v.value as u32, v.loc));
        match entry.name().map(|n| n.value()).unwrap_or_default() {
            "interval" => probe.interval = ctx.duration(entry, "interval"),
            "timeout" => probe.timeout = ctx.duration(entry, "timeout"),
            "failure-threshold" => probe.failure_threshold = threshold(ctx, "failure-threshold"),
            "success-threshold" => probe.success_threshold = threshold(ctx, "success-threshold"),
            _ => {}
        }
    }
    probe
}

fn lower_timeouts(ctx: &mut Ctx, node: &KdlNode) -> Timeouts {
    let r = ctx.open(node, &TIMEOUTS);
    let mut timeouts = Timeouts::default();
    for entry in r.props() {
        let name = entry.name().map(|n| n.value()).unwrap_or_default();
        // A deadline of nothing would give every node up at once.
        let deadline = |ctx: &mut Ctx, what: &str| {
            let d = ctx.duration(entry, what)?;
            if d.value.is_zero() {
                ctx.push(
                    Problem::error(Code::Duration, format!("`{what}` must be longer than 0s"))
                        .primary(d.loc, "no time at all")
                        .help("leave it out for the default"),
                );
                return None;
            }
            Some(d)
        };
        match name {
            "observe" => timeouts.observe = deadline(ctx, "observe"),
            "change" => timeouts.change = deadline(ctx, "change"),
            "image" => timeouts.image = deadline(ctx, "image"),
            _ => {}
        }
    }
    timeouts
}

/// `generations keep=N`: N at least 1, since the current generation is never pruned.
fn lower_generations(ctx: &mut Ctx, node: &KdlNode) -> GenerationSettings {
    let r = ctx.open(node, &GENERATIONS);
    let keep = r
        .prop("keep")
        .and_then(|e| ctx.int(e, "keep", 1, i128::from(u32::MAX)))
        .map(|k| Spanned::new(k.value as u32, k.loc));
    GenerationSettings { keep }
}

fn lower_node(ctx: &mut Ctx, node: &KdlNode) -> Option<Node> {
    let r = ctx.open(node, &NODE);
    let name = name_arg(ctx, &r, "node");
    let address = r.prop("address").and_then(|e| ctx.string(e, "address"));
    let local = r.prop("local").and_then(|e| ctx.bool(e, "local"));
    let mut out = Node {
        name: Spanned::new(NodeName(String::new()), ctx.loc(node.name().span())),
        loc: ctx.loc(node.name().span()),
        address,
        local,
        ssh: SshSettings::default(),
        ssh_loc: None,
        gpus: None,
        labels: BTreeMap::new(),
        vfolder_root: None,
        probe: ProbeSettings::default(),
        timeouts: Timeouts::default(),
    };
    let mut seen = Vec::new();
    for child in r.children() {
        let kind = child.name().value();
        if NODE_CHILDREN.contains(&kind) && kind != "labels" && !once(ctx, &mut seen, child, "node") {
            continue;
        }
        match kind {
            "ssh" => {
                out.ssh = lower_ssh(ctx, child);
                out.ssh_loc = Some(ctx.loc(child.name().span()));
            }
            "gpus" => {
                let r = ctx.open(child, &GPUS);
                out.gpus =
                    r.arg(0).and_then(|e| ctx.int(e, "gpus", 0, 1024)).map(|g| Spanned::new(g.value as u32, g.loc));
            }
            "labels" => {
                let r = ctx.open(child, &LABELS);
                for entry in r.props() {
                    let key = entry.name().map(|n| n.value().to_string()).unwrap_or_default();
                    let Some(value) = ctx.string(entry, &format!("label {key}")) else { continue };
                    if let Some(first) = out.labels.get(&key) {
                        let first = first.loc;
                        ctx.push(
                            Problem::error(Code::DuplicateProperty, format!("label `{key}` is given twice"))
                                .label(first, "first given here")
                                .primary(value.loc, "given again here"),
                        );
                        continue;
                    }
                    out.labels.insert(key, value);
                }
            }
            "vfolder-root" => {
                let r = ctx.open(child, &VFOLDER_ROOT);
                out.vfolder_root = r.arg(0).and_then(|e| ctx.string(e, "vfolder-root"));
            }
            "probe" => out.probe = lower_probe(ctx, child),
            "timeouts" => out.timeouts = lower_timeouts(ctx, child),
            _ => unknown_child(ctx, child, "node", NODE_CHILDREN),
        }
    }
    let name = name?;
    out.name = Spanned::new(NodeName(name.value), name.loc);
    Some(out)
}

fn lower_image(ctx: &mut Ctx, node: &KdlNode) -> Option<Image> {
    let r = ctx.open(node, &IMAGE);
    let name = name_arg(ctx, &r, "image");
    let reference = match r.prop("ref") {
        Some(e) => ctx.string(e, "ref"),
        None => {
            ctx.push(
                Problem::error(Code::MissingProperty, "`image` needs a `ref`")
                    .primary(ctx.loc(node.name().span()), "no `ref` given")
                    .help(
                        "name the image reference: `image \"pytorch\" ref=\"cr.backend.ai/stable/python-pytorch:2.3\"`",
                    ),
            );
            None
        }
    };
    let mut digest = None;
    let mut min_gpus = None;
    let mut source = ImageSource::Pull;
    let mut source_loc: Option<Loc> = None;
    let mut seen = Vec::new();
    for child in r.children() {
        let kind = child.name().value();
        if IMAGE_CHILDREN.contains(&kind) && !once(ctx, &mut seen, child, "image") {
            continue;
        }
        match kind {
            "digest" => {
                let r = ctx.open(child, &DIGEST);
                digest = r.arg(0).and_then(|e| ctx.string(e, "digest"));
                if let Some(d) = &digest
                    && !is_digest(&d.value)
                {
                    ctx.push(
                        Problem::error(Code::InvalidValue, format!("`{}` is not an image digest", d.value))
                            .primary(d.loc, "not `sha256:` and 64 hex digits")
                            .help("copy it from `docker inspect --format '{{.RepoDigests}}'`"),
                    );
                    digest = None;
                }
            }
            "min-gpus" => {
                let r = ctx.open(child, &MIN_GPUS);
                min_gpus =
                    r.arg(0).and_then(|e| ctx.int(e, "min-gpus", 0, 1024)).map(|g| Spanned::new(g.value as u32, g.loc));
            }
            "build" | "archive" => {
                let here = ctx.loc(child.name().span());
                if let Some(first) = source_loc {
                    ctx.push(
                        Problem::error(Code::Conflict, "an image is either built or loaded from an archive, not both")
                            .label(first, "first source")
                            .primary(here, "second source")
                            .help("keep one of `build` and `archive`"),
                    );
                    continue;
                }
                source_loc = Some(here);
                if kind == "build" {
                    let r = ctx.open(child, &BUILD);
                    let dockerfile = r.prop("dockerfile").and_then(|e| ctx.string(e, "dockerfile"));
                    match r.prop("context").and_then(|e| ctx.string(e, "context")) {
                        Some(c) => {
                            let context = Spanned::new(ctx.resolve_path(&c.value), c.loc);
                            source = ImageSource::Build { context, dockerfile };
                        }
                        None if r.prop("context").is_none() => ctx.push(
                            Problem::error(Code::MissingProperty, "`build` needs a `context`")
                                .primary(here, "no `context` given")
                                .help("name the build directory: `build context=\"./images/tools\"`"),
                        ),
                        None => {}
                    }
                } else {
                    let r = ctx.open(child, &ARCHIVE);
                    if let Some(p) = r.arg(0).and_then(|e| ctx.string(e, "archive")) {
                        source = ImageSource::Archive { path: Spanned::new(ctx.resolve_path(&p.value), p.loc) };
                    }
                }
            }
            _ => unknown_child(ctx, child, "image", IMAGE_CHILDREN),
        }
    }
    let name = name?;
    Some(Image {
        name: Spanned::new(ImageName(name.value), name.loc),
        loc: ctx.loc(node.name().span()),
        reference: reference.unwrap_or_else(missing),
        digest,
        min_gpus,
        source,
    })
}

/// Stands in for a required value that is missing or invalid (already reported); see [`Loc::is_nowhere`].
fn missing() -> Spanned<String> {
    Spanned::new(String::new(), Loc::nowhere())
}

fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn required_string(ctx: &mut Ctx, r: &Reader<'_>, key: &str, kind: &str, example: &str) -> Option<Spanned<String>> {
    match r.prop(key) {
        Some(e) => ctx.string(e, key),
        None => {
            ctx.push(
                Problem::error(Code::MissingProperty, format!("`{kind}` needs `{key}`"))
                    .primary(ctx.loc(r.name_span()), format!("no `{key}` given"))
                    .help(format!("add it: `{example}`")),
            );
            None
        }
    }
}

fn lower_vfolder(ctx: &mut Ctx, node: &KdlNode) -> Option<Vfolder> {
    let r = ctx.open(node, &VFOLDER);
    let name = name_arg(ctx, &r, "vfolder");
    let on = required_string(ctx, &r, "node", "vfolder", "vfolder \"datasets\" node=\"gpu-01\"");
    let permission = r.prop("permission").and_then(|e| ctx.string(e, "permission")).and_then(|p| {
        let value = match p.value.as_str() {
            "rw" => Permission::Rw,
            "ro" => Permission::Ro,
            other => {
                ctx.push(
                    Problem::error(Code::InvalidValue, format!("`{other}` is not a vfolder permission"))
                        .primary(p.loc, "expected `rw` or `ro`")
                        .help("`permission=\"ro\"` makes the vfolder read-only for every session; the default is `rw`"),
                );
                return None;
            }
        };
        Some(Spanned::new(value, p.loc))
    });
    let quota = r.prop("quota").and_then(|e| ctx.size(e, "quota"));
    let name = name?;
    let on = on.unwrap_or_else(missing);
    Some(Vfolder {
        name: Spanned::new(VfolderName(name.value), name.loc),
        loc: ctx.loc(node.name().span()),
        node: Spanned::new(NodeName(on.value), on.loc),
        permission,
        quota,
    })
}

fn lower_session(ctx: &mut Ctx, node: &KdlNode) -> Option<Session> {
    let r = ctx.open(node, &SESSION);
    let name = name_arg(ctx, &r, "session");
    let image = required_string(ctx, &r, "image", "session", "session \"train\" image=\"pytorch\" node=\"gpu-01\"");
    let on = required_string(ctx, &r, "node", "session", "session \"train\" image=\"pytorch\" node=\"gpu-01\"");
    let mut resources = Resources::default();
    let mut env = Vec::new();
    let mut mounts = Vec::new();
    let mut command = Vec::new();
    let mut ports: Vec<Port> = Vec::new();
    let mut health = None;
    let mut depends_on = Vec::new();
    let mut restart = None;
    let mut shm_size = None;
    let mut ulimits: Vec<Ulimit> = Vec::new();
    let mut user = None;
    let mut network = None;
    let mut seen = Vec::new();
    for child in r.children() {
        let kind = child.name().value();
        let single = matches!(kind, "resources" | "command" | "health" | "restart" | "shm-size" | "user" | "network");
        if single && !once(ctx, &mut seen, child, "session") {
            continue;
        }
        match kind {
            "resources" => resources = lower_resources(ctx, child),
            "env" => lower_env(ctx, child, &mut env),
            "mount" => mounts.extend(lower_mount(ctx, child)),
            "command" => {
                let r = ctx.open(child, &COMMAND);
                command = r.args().iter().filter_map(|e| ctx.string(e, "command argument")).collect();
            }
            "port" => lower_port(ctx, child, &mut ports),
            "shm-size" => {
                let r = ctx.open(child, &SHM_SIZE);
                shm_size = r.arg(0).and_then(|e| ctx.size(e, "shm-size"));
                if let Some(s) = &shm_size
                    && s.value == 0
                {
                    ctx.push(
                        Problem::error(Code::OutOfRange, "`shm-size` must be more than 0 bytes")
                            .primary(s.loc, "an empty /dev/shm")
                            .help("leave `shm-size` out for the default, or write a size: `shm-size \"16GiB\"`"),
                    );
                    shm_size = None;
                }
            }
            "ulimit" => lower_ulimits(ctx, child, &mut ulimits),
            "user" => user = lower_user(ctx, child),
            "network" => {
                let r = ctx.open(child, &NETWORK);
                let written = r.arg(0).and_then(|e| ctx.string(e, "network"));
                network = written.and_then(|s| one_of(ctx, s, &Network::ALL, ("network mode", "mode", "modes")));
            }
            "health" => health = lower_health(ctx, child),
            "depends-on" => {
                let r = ctx.open(child, &DEPENDS_ON);
                for entry in r.args() {
                    if let Some(s) = ctx.string(entry, "depends-on") {
                        depends_on.push(Spanned::new(SessionName(s.value), s.loc));
                    }
                }
            }
            "restart" => {
                let r = ctx.open(child, &RESTART);
                let written = r.arg(0).and_then(|e| ctx.string(e, "restart"));
                restart = written.and_then(|s| one_of(ctx, s, &Restart::ALL, ("restart policy", "policy", "policies")));
            }
            _ => unknown_child(ctx, child, "session", SESSION_CHILDREN),
        }
    }
    for (i, port) in ports.iter().enumerate() {
        if let Some(first) = ports[..i].iter().find(|p| p.name.value == port.name.value) {
            ctx.push(
                Problem::error(Code::DuplicateProperty, format!("port `{}` is given twice", port.name.value))
                    .label(first.name.loc, "first given here")
                    .primary(port.name.loc, "given again here"),
            );
        }
    }
    let (name, image, on) = (name?, image.unwrap_or_else(missing), on.unwrap_or_else(missing));
    Some(Session {
        name: Spanned::new(SessionName(name.value), name.loc),
        loc: ctx.loc(node.name().span()),
        image: Spanned::new(ImageName(image.value), image.loc),
        node: Spanned::new(NodeName(on.value), on.loc),
        resources,
        env,
        mounts,
        command,
        ports,
        health,
        depends_on,
        restart,
        shm_size,
        ulimits,
        user,
        network,
    })
}

/// The value of `all` a word names, or an error at the word with a suggestion. `names`: what the words
/// are, one of them, and several (`("restart policy", "policy", "policies")`).
fn one_of<T: Copy>(
    ctx: &mut Ctx,
    written: Spanned<String>,
    all: &[(&'static str, T)],
    (what, one, several): (&str, &str, &str),
) -> Option<Spanned<T>> {
    if let Some((_, value)) = all.iter().find(|(name, _)| *name == written.value) {
        return Some(Spanned::new(*value, written.loc));
    }
    let help = suggest::help_for(&written.value, all.iter().map(|(name, _)| *name), several);
    ctx.push(
        Problem::error(Code::InvalidValue, format!("`{}` is not a {what}", written.value))
            .primary(written.loc, format!("unknown {one}"))
            .help_opt(help),
    );
    None
}

/// `port jupyter=8888`, several names at once, or one with `publish=18888` / `publish="0.0.0.0:18888"`.
fn lower_port(ctx: &mut Ctx, node: &KdlNode, ports: &mut Vec<Port>) {
    let r = ctx.open(node, &PORT);
    let mut publish = None;
    let mut named = Vec::new();
    for entry in r.props() {
        let key = entry.name().map(|n| n.value().to_string()).unwrap_or_default();
        if key == "publish" {
            publish = lower_publish(ctx, entry);
            continue;
        }
        let Some(port) = ctx.int(entry, &format!("port {key}"), 1, 65535) else { continue };
        named.push(Port {
            name: Spanned::new(key, port.loc),
            port: Spanned::new(port.value as u16, port.loc),
            publish: None,
        });
    }
    if let Some(p) = publish {
        match named.as_mut_slice() {
            [one] => one.publish = Some(p),
            [] => ctx.push(
                Problem::error(Code::MissingProperty, "`publish` names no port")
                    .primary(p.loc, "published, but which port?")
                    .help("write the port beside it: `port jupyter=8888 publish=18888`"),
            ),
            [_, second, ..] => ctx.push(
                Problem::error(Code::Conflict, "`publish` on a `port` that names several ports")
                    .label(second.name.loc, "a second port")
                    .primary(p.loc, "which one is published?")
                    .help("write one `port` node per published port: `port jupyter=8888 publish=18888`"),
            ),
        }
    }
    ports.extend(named);
}

/// `publish=18888` (on loopback) or `publish="ADDRESS:PORT"`.
fn lower_publish(ctx: &mut Ctx, entry: &KdlEntry) -> Option<Spanned<Publish>> {
    let loc = ctx.loc(entry.span());
    let bad = |ctx: &mut Ctx, why: String| {
        ctx.push(
            Problem::error(Code::InvalidValue, format!("`publish` {why}"))
                .primary(loc, "not a host port")
                .help("write a port (`publish=18888`, on the node's loopback) or an address and a port (`publish=\"0.0.0.0:18888\"`)"),
        );
        None
    };
    let (address, port) = match entry.value() {
        KdlValue::Integer(_) => {
            let port = ctx.int(entry, "publish", 1, 65535)?;
            (Publish::DEFAULT_ADDRESS.to_string(), port.value as u16)
        }
        KdlValue::String(text) => {
            let (address, port) = match text.rsplit_once(':') {
                Some((a, p)) => (a.trim_start_matches('[').trim_end_matches(']').to_string(), p),
                None => (Publish::DEFAULT_ADDRESS.to_string(), text.as_str()),
            };
            let Ok(port) = port.parse::<u16>() else { return bad(ctx, format!("`{text}` has no port number")) };
            if port == 0 {
                return bad(ctx, "must name a port from 1 to 65535".into());
            }
            if address.parse::<std::net::IpAddr>().is_err() {
                return bad(ctx, format!("`{address}` is not an IP address"));
            }
            (address, port)
        }
        other => {
            let found = crate::config::reader::type_name(other);
            return bad(ctx, format!("must be a port or an `ADDRESS:PORT` string, found {found}"));
        }
    };
    Some(Spanned::new(Publish { address, port }, loc))
}

/// `ulimit memlock=-1 stack=67108864`, or a soft and a hard value as `nofile="1024:65536"`.
fn lower_ulimits(ctx: &mut Ctx, node: &KdlNode, ulimits: &mut Vec<Ulimit>) {
    let r = ctx.open(node, &ULIMIT);
    if r.props().is_empty() {
        ctx.push(
            Problem::error(Code::MissingArgument, "`ulimit` sets nothing")
                .primary(ctx.loc(node.name().span()), "no limit given")
                .help("write `ulimit memlock=-1 stack=67108864` (-1 is unlimited; \"SOFT:HARD\" sets both)"),
        );
    }
    for entry in r.props() {
        let name = entry.name().map(|n| n.value().to_string()).unwrap_or_default();
        let loc = ctx.loc(entry.span());
        let limits = match entry.value() {
            KdlValue::Integer(i) if *i >= -1 && *i <= i64::MAX as i128 => Some((*i as i64, *i as i64)),
            KdlValue::String(text) => text.split_once(':').and_then(|(s, h)| {
                let limit = |v: &str| v.trim().parse::<i64>().ok().filter(|v| *v >= -1);
                Some((limit(s)?, limit(h)?))
            }),
            _ => None,
        };
        let Some((soft, hard)) = limits else {
            ctx.push(
                Problem::error(Code::InvalidValue, format!("`ulimit {name}` must be a limit"))
                    .primary(loc, "not a limit")
                    .help("write a number (-1 is unlimited) or soft and hard as a string: `nofile=\"1024:65536\"`"),
            );
            continue;
        };
        if hard != -1 && (soft == -1 || soft > hard) {
            ctx.push(
                Problem::error(Code::InvalidValue, format!("`ulimit {name}`: the soft limit is above the hard one"))
                    .primary(loc, "soft > hard")
                    .help("the kernel refuses a soft limit above the hard limit"),
            );
            continue;
        }
        ulimits.push(Ulimit { name: Spanned::new(name, loc), soft, hard });
    }
}

/// `user uid=1000 gid=1000`; the group defaults to the uid's number, as `docker run --user 1000` does not
/// (it takes group 0): files a session writes into its vfolders then belong to that user and group.
fn lower_user(ctx: &mut Ctx, node: &KdlNode) -> Option<User> {
    let r = ctx.open(node, &USER);
    let loc = ctx.loc(node.name().span());
    let id = |ctx: &mut Ctx, key: &str| {
        r.prop(key)
            .and_then(|e| ctx.int(e, key, 0, i128::from(u32::MAX - 1)))
            .map(|v| Spanned::new(v.value as u32, v.loc))
    };
    let uid = id(ctx, "uid");
    let gid = id(ctx, "gid");
    let Some(uid) = uid else {
        if r.prop("uid").is_none() {
            ctx.push(
                Problem::error(Code::MissingProperty, "`user` needs a `uid`")
                    .primary(loc, "whom to run as?")
                    .help("write `user uid=1000 gid=1000`"),
            );
        }
        return None;
    };
    Some(User { loc, uid, gid })
}

fn lower_resources(ctx: &mut Ctx, node: &KdlNode) -> Resources {
    let r = ctx.open(node, &RESOURCES);
    let mut res = Resources { loc: Some(ctx.loc(node.name().span())), ..Resources::default() };
    for entry in r.props() {
        match entry.name().map(|n| n.value()).unwrap_or_default() {
            "cpus" => res.cpus = ctx.positive_number(entry, "cpus"),
            "memory" => res.memory = ctx.size(entry, "memory"),
            "gpus" => {
                res.gpus = ctx.int(entry, "gpus", 0, 1024).map(|g| Spanned::new(g.value as u32, g.loc));
            }
            "gpu-devices" => {
                res.gpu_devices = ctx.string(entry, "gpu-devices").and_then(|s| {
                    let devices: Vec<String> =
                        s.value.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_string).collect();
                    let well_formed = |d: &String| {
                        d.parse::<u32>().is_ok() || d.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/".contains(&b))
                    };
                    if devices.is_empty() || !devices.iter().all(well_formed) {
                        ctx.push(
                            Problem::error(Code::InvalidValue, "`gpu-devices` must list devices")
                                .primary(s.loc, "not a device list")
                                .help("write indices or UUIDs separated by commas: `gpu-devices=\"0,3\"`"),
                        );
                        return None;
                    }
                    Some(Spanned::new(devices, s.loc))
                });
            }
            "mig" => res.mig = ctx.string(entry, "mig"),
            _ => {}
        }
    }
    res
}

fn lower_env(ctx: &mut Ctx, node: &KdlNode, env: &mut Vec<EnvVar>) {
    let has_args = node.entries().iter().any(|e| e.name().is_none());
    if !has_args {
        let r = ctx.open(node, &ENV_MAP);
        for entry in r.props() {
            let key = entry.name().map(|n| n.value().to_string()).unwrap_or_default();
            if let Some(v) = ctx.string(entry, &format!("env {key}")) {
                env.push(EnvVar { name: Spanned::new(key, v.loc), value: EnvValue::Literal(v.value) });
            }
        }
        if r.props().is_empty() {
            ctx.push(
                Problem::error(Code::MissingArgument, "`env` sets nothing")
                    .primary(ctx.loc(node.name().span()), "no variable given")
                    .help("write `env NAME=\"value\"` or `env \"NAME\" from-env=\"VAR\"`"),
            );
        }
        return;
    }
    let r = ctx.open(node, &ENV_REF);
    let Some(name) = r.arg(0).and_then(|e| ctx.string(e, "variable name")) else { return };
    let from_env = r.prop("from-env").and_then(|e| ctx.string(e, "from-env"));
    let from_file = r.prop("from-file").and_then(|e| ctx.string(e, "from-file"));
    let value = match (from_env, from_file) {
        (Some(v), None) => EnvValue::FromEnv(v.value),
        (None, Some(f)) => EnvValue::FromFile(ctx.spec_path(&f.value)),
        (Some(a), Some(b)) => {
            ctx.push(
                Problem::error(Code::Conflict, format!("env `{}` has two sources", name.value))
                    .label(a.loc, "from the environment")
                    .primary(b.loc, "and from a file")
                    .help("keep one of `from-env` and `from-file`"),
            );
            return;
        }
        (None, None) => {
            if r.prop("from-env").is_none() && r.prop("from-file").is_none() {
                ctx.push(
                    Problem::error(Code::MissingProperty, format!("env `{}` has no value", name.value))
                        .primary(name.loc, "no value given")
                        .help(format!(
                            "write `env {}=\"value\"`, or take it from the controller with `from-env=\"VAR\"` or `from-file=\"path\"`",
                            name.value
                        )),
                );
            }
            return;
        }
    };
    env.push(EnvVar { name, value });
}

fn lower_mount(ctx: &mut Ctx, node: &KdlNode) -> Option<Mount> {
    let r = ctx.open(node, &MOUNT);
    let vfolder = r.arg(0).and_then(|e| ctx.string(e, "vfolder name"))?;
    let alias = r.prop("alias").and_then(|e| ctx.string(e, "alias"));
    let readonly = r.prop("readonly").and_then(|e| ctx.bool(e, "readonly"));
    Some(Mount {
        loc: ctx.loc(node.span()),
        vfolder: Spanned::new(VfolderName(vfolder.value), vfolder.loc),
        alias,
        readonly,
    })
}

fn lower_health(ctx: &mut Ctx, node: &KdlNode) -> Option<Health> {
    let r = ctx.open(node, &HEALTH);
    let here = ctx.loc(node.name().span());
    let probe = probe_props(ctx, &r);
    let http = r.prop("http").and_then(|e| ctx.int(e, "http", 1, 65535));
    let path = r.prop("path").and_then(|e| ctx.string(e, "path"));
    let argv: Vec<String> = r.args().iter().filter_map(|e| ctx.string(e, "health command")).map(|s| s.value).collect();
    let check = match (http, r.args().is_empty()) {
        (Some(port), true) => {
            let path = path.map_or_else(|| "/".to_string(), |p| p.value);
            if !path.starts_with('/') {
                ctx.push(
                    Problem::error(Code::InvalidValue, format!("health path `{path}` must start with `/`"))
                        .primary(r.prop("path").map_or(here, |e| ctx.loc(e.span())), "relative path"),
                );
            }
            HealthCheck::Http { port: port.value as u16, path }
        }
        (None, false) if r.prop("http").is_none() => {
            if let Some(p) = r.prop("path") {
                ctx.push(
                    Problem::error(Code::Conflict, "`path` belongs to an HTTP check")
                        .primary(ctx.loc(p.span()), "no `http=` port given")
                        .help("use `health http=8888 path=\"/api\"` or `health \"cmd\" \"arg\"`, not both"),
                );
            }
            HealthCheck::Exec(argv)
        }
        (_, false) => {
            ctx.push(
                Problem::error(Code::Conflict, "a health check is an HTTP GET or a command, not both")
                    .primary(here, "both `http=` and a command")
                    .help("use `health http=8888 path=\"/api\"` or `health \"cat\" \"/tmp/ready\"`"),
            );
            return None;
        }
        (None, true) => {
            if r.prop("http").is_none() {
                ctx.push(
                    Problem::error(Code::MissingArgument, "`health` needs a check")
                        .primary(here, "no check given")
                        .help("use `health http=8888 path=\"/api\"` or `health \"cat\" \"/tmp/ready\"`"),
                );
            }
            return None;
        }
    };
    Some(Health { loc: here, check, probe })
}

/// Folds a cluster's items (includes already spliced in) into a [`Cluster`].
pub fn assemble(raw_name: Spanned<ClusterName>, loc: Loc, items: Vec<Item>, problems: &mut Vec<Problem>) -> Cluster {
    let mut cluster = Cluster {
        name: raw_name,
        loc,
        root: PathBuf::new(),
        ssh: SshSettings::default(),
        agent_binary: None,
        probe: ProbeSettings::default(),
        timeouts: Timeouts::default(),
        generations: GenerationSettings::default(),
        nodes: Vec::new(),
        images: Vec::new(),
        vfolders: Vec::new(),
        sessions: Vec::new(),
    };
    let mut singles: Vec<(&'static str, Loc)> = Vec::new();
    let mut single = |kind: &'static str, here: Loc, problems: &mut Vec<Problem>| {
        if let Some((_, first)) = singles.iter().find(|(k, _)| *k == kind) {
            problems.push(
                Problem::error(
                    Code::DuplicateChild,
                    format!("`{kind}` is given twice in cluster `{}`", cluster.name.value),
                )
                .label(*first, "first given here")
                .primary(here, "given again here")
                .help(format!("merge them into one `{kind}` node")),
            );
            return false;
        }
        singles.push((kind, here));
        true
    };
    for item in items {
        match item {
            Item::Ssh(ssh, here) => {
                if single("ssh", here, problems) {
                    cluster.ssh = ssh;
                }
            }
            Item::Agent(binary, here) => {
                if single("agent", here, problems) {
                    cluster.agent_binary = binary;
                }
            }
            Item::Probe(probe, here) => {
                if single("probe", here, problems) {
                    cluster.probe = probe;
                }
            }
            Item::Timeouts(timeouts, here) => {
                if single("timeouts", here, problems) {
                    cluster.timeouts = timeouts;
                }
            }
            Item::Generations(settings, here) => {
                if single("generations", here, problems) {
                    cluster.generations = settings;
                }
            }
            Item::Node(n) => cluster.nodes.push(n),
            Item::Image(i) => cluster.images.push(i),
            Item::Vfolder(v) => cluster.vfolders.push(v),
            Item::Session(s) => cluster.sessions.push(s),
            // The loader replaces includes before assembling; one left here could not be read.
            Item::Include(_) => {}
        }
    }
    cluster
}
