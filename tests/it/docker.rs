//! The agent's Docker half against the machine's real engine: containers shaped as promised, ownership
//! honoured, images built, loaded and (unreachably) pulled. Nothing is skipped: without a reachable
//! engine every test here fails and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bai::agent::docker::{DockerError, Engine};
use bai::model::Restart;
use bai::protocol::{CreateSession, EnsureImage, ErrorKind, ImageRecipe, RpcError, container_name, labels};
use bai::state::snapshot::{ContainerState, Unowned, UnownedKind};
use bai::state::spec::{EnvSpec, ImageSpec, MountSpec, ResourceSpec, SessionSpec, SourceKind, hash_of};
use serde_json::Value;

use crate::support::images::{DOCKERFILE, IMAGE, context, docker, docker_ok, test_image};

fn engine() -> Engine {
    test_image();
    Engine::connect().unwrap_or_else(|e| panic!("the Docker engine is not reachable: {e}"))
}

/// A cluster name no other test (or earlier run of this one) uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// Removes, even when a test fails, every container holding the cluster's names or labels, and the
/// image tags a test made.
pub(crate) struct Cleanup {
    cluster: String,
    images: Vec<String>,
}

impl Cleanup {
    pub(crate) fn new(cluster: &str) -> Self {
        Cleanup { cluster: cluster.to_string(), images: Vec::new() }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let by_label = format!("label={}={}", labels::CLUSTER, self.cluster);
        let by_name = format!("name={}", container_name(&self.cluster, ""));
        for filter in [by_label, by_name] {
            let ids = docker(&["ps", "-aq", "--filter", &filter]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                docker(&["rm", "-f", id]);
            }
        }
        for image in &self.images {
            docker(&["rmi", image]);
        }
    }
}

pub(crate) fn spec(command: &[&str], mounts: Vec<MountSpec>) -> SessionSpec {
    SessionSpec {
        image: "busybox".into(),
        image_ref: IMAGE.into(),
        image_digest: None,
        node: "n1".into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([("A".into(), EnvSpec::Value("1".into()))]),
        mounts,
        resources: ResourceSpec { cpus: None, memory: None, gpus: 0, ..Default::default() },
        ports: BTreeMap::new(),
        restart: Restart::No,
        ..Default::default()
    }
}

pub(crate) fn request(cluster: &str, name: &str, spec: SessionSpec) -> CreateSession {
    CreateSession {
        cluster: cluster.into(),
        node: "n1".into(),
        name: name.into(),
        spec_hash: hash_of(&spec),
        spec,
        vfolder_root: "/unused".into(),
        secrets: BTreeMap::new(),
    }
}

fn no_vfolders(name: &str) -> PathBuf {
    panic!("no vfolder expected, got {name}")
}

fn inspect(container: &str) -> Value {
    let text = docker_ok(&["inspect", container]);
    let doc: Value = serde_json::from_str(&text).expect("docker inspect prints JSON");
    doc[0].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn create_session_builds_the_container_bai_promises() {
    let engine = engine();
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let data = tempfile::tempdir().expect("temp dir");
    let ckpt = tempfile::tempdir().expect("temp dir");
    let mounts = vec![
        MountSpec { vfolder: "ckpt".into(), destination: "/home/work/ckpt".into(), readonly: false },
        MountSpec { vfolder: "data".into(), destination: "/home/work/data".into(), readonly: true },
    ];
    let mut spec = spec(&["/bin/busybox", "sleep", "300"], mounts);
    spec.env.insert("S".into(), EnvSpec::from_env("S_ON_CONTROLLER"));
    spec.restart = Restart::OnFailure;
    spec.resources = ResourceSpec { cpus: Some(0.5), memory: Some(64 << 20), gpus: 0, ..Default::default() };
    spec.ports.insert("http".into(), 8080);
    let mut req = request(&cluster, "train", spec.clone());
    req.secrets.insert("S".into(), "hush".into());
    let vfolders = |name: &str| match name {
        "data" => data.path().to_path_buf(),
        "ckpt" => ckpt.path().to_path_buf(),
        other => panic!("unexpected vfolder {other}"),
    };
    engine.create_session(&req, &vfolders).await.expect("the session is created");

    let name = container_name(&cluster, "train");
    let c = inspect(&name);
    assert_eq!(c["Name"], format!("/{name}"));
    let l = &c["Config"]["Labels"];
    assert_eq!(l[labels::CLUSTER], cluster.as_str());
    assert_eq!(l[labels::NODE], "n1");
    assert_eq!(l[labels::SESSION], "train");
    assert_eq!(l[labels::SPEC_HASH], req.spec_hash.as_str());
    let labelled: SessionSpec =
        serde_json::from_str(l[labels::SPEC].as_str().expect("the spec label")).expect("the spec label parses");
    assert_eq!(labelled, spec);
    assert_eq!(c["Config"]["WorkingDir"], "/home/work");
    let binds = strings(&c["HostConfig"]["Binds"]);
    assert!(binds.contains(&format!("{}:/home/work/data:ro", data.path().display())), "{binds:?}");
    assert!(binds.contains(&format!("{}:/home/work/ckpt", ckpt.path().display())), "{binds:?}");
    let env = strings(&c["Config"]["Env"]);
    let paths: Vec<&String> = env.iter().filter(|e| e.starts_with("PATH=")).collect();
    assert_eq!(paths, ["PATH=/home/work/.local/bin:/bin"], "{env:?}");
    assert!(env.contains(&"A=1".to_string()) && env.contains(&"S=hush".to_string()), "{env:?}");
    assert_eq!(strings(&c["Config"]["Cmd"]), ["/bin/busybox", "sleep", "300"]);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(c["HostConfig"]["NanoCpus"], 500_000_000);
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert!(c["HostConfig"]["DeviceRequests"].is_null(), "no GPUs asked, none requested");
    assert!(c["Config"]["ExposedPorts"]["8080/tcp"].is_object(), "{}", c["Config"]["ExposedPorts"]);
    let published = &c["HostConfig"]["PortBindings"];
    assert!(published.is_null() || published.as_object().is_some_and(|m| m.is_empty()), "{published}");

    // `ro` is honoured by the kernel, not only recorded: root in the container cannot write there.
    let ro = docker(&["exec", &name, "/bin/busybox", "sh", "-c", "touch /home/work/data/x"]);
    assert!(!ro.status.success(), "writing to the read-only mount succeeded");
    assert!(!data.path().join("x").exists());
    docker_ok(&["exec", &name, "/bin/busybox", "sh", "-c", "touch /home/work/ckpt/x"]);
    assert!(ckpt.path().join("x").exists(), "the rw mount is the vfolder's directory");

    let (state, exit, ip) = engine.session_state(&cluster, "train").await.expect("state").expect("present");
    assert_eq!((state, exit), (ContainerState::Running, None));
    let ip = ip.expect("a running container has an address on the bridge");
    assert_eq!(Some(ip.as_str()), c["NetworkSettings"]["Networks"]["bridge"]["IPAddress"].as_str());
}

#[tokio::test]
async fn sessions_are_listed_replaced_and_removed() {
    let engine = engine();
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let first = request(&cluster, "train", spec(&["/bin/busybox", "sleep", "300"], vec![]));
    engine.create_session(&first, &no_vfolders).await.expect("created");

    let listed = engine.containers(&cluster, "n1").await.expect("containers").sessions;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "train");
    assert_eq!(listed[0].spec_hash, first.spec_hash);
    assert_eq!(listed[0].spec.as_ref(), Some(&first.spec));
    assert_eq!((listed[0].state, listed[0].exit_code), (ContainerState::Running, None));
    let apart = engine.containers(&format!("{cluster}x"), "n1").await.expect("containers");
    assert!(apart.sessions.is_empty() && apart.unowned.is_empty(), "clusters are apart: {apart:?}");
    // A session whose name ends as a replacement's does is a session like any other.
    let next = request(&cluster, "train_next", spec(&["/bin/busybox", "sleep", "300"], vec![]));
    engine.create_session(&next, &no_vfolders).await.expect("created");
    let listed = engine.containers(&cluster, "n1").await.expect("containers");
    assert_eq!(listed.sessions.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["train", "train_next"]);
    assert!(listed.unowned.is_empty(), "{listed:?}");
    assert!(
        engine.containers(&cluster, "n2").await.expect("containers").sessions.is_empty(),
        "each node reports its own"
    );

    // A new spec replaces the owned container.
    let old_id = inspect(&container_name(&cluster, "train"))["Id"].clone();
    let second = request(&cluster, "train", spec(&["/bin/busybox", "sleep", "200"], vec![]));
    engine.create_session(&second, &no_vfolders).await.expect("replaced");
    let c = inspect(&container_name(&cluster, "train"));
    assert_ne!(c["Id"], old_id);
    assert_eq!(strings(&c["Config"]["Cmd"]), ["/bin/busybox", "sleep", "200"]);
    let listed = engine.containers(&cluster, "n1").await.expect("containers").sessions;
    assert_eq!(
        listed.iter().map(|s| s.spec_hash.as_str()).collect::<Vec<_>>(),
        [second.spec_hash.as_str(), next.spec_hash.as_str()]
    );
    // Replacing `train` left `train_next` alone.
    assert!(engine.remove_session(&cluster, "train_next").await.expect("removed"));

    // A session that ends reports its exit code.
    let failing = request(&cluster, "oops", spec(&["/bin/busybox", "sh", "-c", "exit 3"], vec![]));
    engine.create_session(&failing, &no_vfolders).await.expect("created");
    let mut oops = None;
    for _ in 0..100 {
        let listed = engine.containers(&cluster, "n1").await.expect("containers").sessions;
        oops = listed.into_iter().find(|s| s.name == "oops");
        if oops.as_ref().is_some_and(|s| s.state == ContainerState::Exited) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let oops = oops.expect("the exited session is still listed");
    assert_eq!((oops.state, oops.exit_code), (ContainerState::Exited, Some(3)));
    let state = engine.session_state(&cluster, "oops").await.expect("state").expect("present");
    assert_eq!((state.0, state.1), (ContainerState::Exited, Some(3)));

    assert!(engine.remove_session(&cluster, "train").await.expect("removed"));
    assert!(!engine.remove_session(&cluster, "train").await.expect("already gone"));
    assert!(!docker(&["inspect", &container_name(&cluster, "train")]).status.success());
    assert!(engine.remove_session(&cluster, "oops").await.expect("removed"));
    assert!(engine.containers(&cluster, "n1").await.expect("containers").sessions.is_empty());
    assert_eq!(engine.session_state(&cluster, "train").await.expect("state"), None);
}

#[tokio::test]
async fn containers_without_bais_labels_are_reported_and_never_touched() {
    let engine = engine();
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let foo = container_name(&cluster, "foo");
    let bar = container_name(&cluster, "bar");
    docker_ok(&["run", "-d", "--name", &foo, IMAGE]);
    // Another cluster's labels on one of this cluster's names do not make it this cluster's.
    let other = format!("{}=elsewhere", labels::CLUSTER);
    let session = format!("{}=bar", labels::SESSION);
    docker_ok(&["run", "-d", "--name", &bar, "--label", &other, "--label", &session, IMAGE]);
    let foo_id = inspect(&foo)["Id"].clone();

    let unowned = engine.containers(&cluster, "n1").await.expect("containers").unowned;
    let expected = [&bar, &foo].map(|n| Unowned { kind: UnownedKind::Container, name: n.clone(), reason: None });
    assert_eq!(unowned, expected);
    assert!(engine.containers(&cluster, "n1").await.expect("containers").sessions.is_empty());

    let req = request(&cluster, "foo", spec(&["/bin/busybox", "sleep", "300"], vec![]));
    let refused = engine.create_session(&req, &no_vfolders).await.expect_err("create must refuse");
    assert!(matches!(refused, DockerError::NotOwned { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains(&foo) && message.contains(&cluster), "{message}");
    assert_eq!(RpcError::from(refused).kind, ErrorKind::Refused);
    let refused = engine.remove_session(&cluster, "foo").await.expect_err("remove must refuse");
    assert!(matches!(refused, DockerError::NotOwned { .. }), "{refused:?}");
    let refused = engine.remove_session(&cluster, "bar").await.expect_err("remove must refuse");
    assert!(matches!(refused, DockerError::NotOwned { .. }), "{refused:?}");
    assert!(matches!(engine.session_state(&cluster, "foo").await, Err(DockerError::NotOwned { .. })));

    for name in [&foo, &bar] {
        let c = inspect(name);
        assert_eq!(c["State"]["Running"], true, "{name} was stopped");
    }
    assert_eq!(inspect(&foo)["Id"], foo_id, "the unowned container was replaced");
}

#[tokio::test]
async fn session_refusals_name_what_is_missing_but_never_a_secret() {
    let engine = engine();
    let cluster = unique("t");
    let _cleanup = Cleanup::new(&cluster);
    let mut with_secret = spec(&[], vec![]);
    with_secret.env.insert("TOKEN".into(), EnvSpec::from_file("/run/secret"));
    with_secret.env.insert("A".into(), EnvSpec::Value("visible".into()));
    let mut req = request(&cluster, "train", with_secret);
    let err = engine.create_session(&req, &no_vfolders).await.expect_err("a missing secret is refused");
    assert!(err.to_string().contains("TOKEN"), "{err}");
    assert_eq!(RpcError::from(err).kind, ErrorKind::BadRequest);

    req.secrets.insert("TOKEN".into(), "sup3r-s3cret".into());
    req.spec.image_ref = format!("bai-test/absent:{cluster}");
    let err = engine.create_session(&req, &no_vfolders).await.expect_err("a missing image is an error");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(&req.spec.image_ref), "{shown}");
    assert!(!shown.contains("sup3r-s3cret"), "a secret leaked: {shown}");
    assert!(!docker(&["inspect", &container_name(&cluster, "train")]).status.success());
}

fn image_request(reference: &str, source: ImageRecipe) -> EnsureImage {
    let kind = match source {
        ImageRecipe::Pull => SourceKind::Pull,
        ImageRecipe::Build { .. } => SourceKind::Build,
        ImageRecipe::Archive { .. } => SourceKind::Archive,
    };
    let spec = ImageSpec { reference: reference.into(), source: kind, digest: None };
    EnsureImage { cluster: "lab".into(), name: "img".into(), spec_hash: hash_of(&spec), spec, source, locked: None }
}

/// `tar -cf` of a directory's contents, the shape of an uploaded build context.
fn tar_of(dir: &Path, into: &Path) {
    let out = Command::new("tar").arg("-cf").arg(into).arg("-C").arg(dir).arg(".").output().expect("tar runs");
    assert!(out.status.success(), "tar failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn ensure_image_builds_from_a_context_blob() {
    let engine = engine();
    let tag = unique("bai-test/built:b");
    let mut cleanup = Cleanup::new(&unique("t"));
    cleanup.images.push(tag.clone());
    let blobs = tempfile::tempdir().expect("temp dir");
    let ctx = context(DOCKERFILE);
    tar_of(ctx.path(), &blobs.path().join("good"));
    let blob_path = |sha: &str| blobs.path().join(sha);

    let source = ImageRecipe::Build { context_sha256: "good".into(), dockerfile: "Dockerfile".into() };
    let id = engine.ensure_image(&image_request(&tag, source), &blob_path).await.expect("the image is built");
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(engine.image_exists(&tag).await.expect("inspect"));
    assert_eq!(docker_ok(&["image", "inspect", "--format", "{{.Id}}", &tag]), id);

    // A failing step is reported with the reference and the end of the build log.
    let bad = context(&format!("{DOCKERFILE}RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo marker-line; exit 7\"]\n"));
    tar_of(bad.path(), &blobs.path().join("bad"));
    let bad_tag = unique("bai-test/unbuilt:b");
    let source = ImageRecipe::Build { context_sha256: "bad".into(), dockerfile: "Dockerfile".into() };
    let err = engine.ensure_image(&image_request(&bad_tag, source), &blob_path).await.expect_err("the build fails");
    let message = err.to_string();
    assert!(message.contains(&bad_tag) && message.contains("marker-line"), "{message}");
    assert!(!engine.image_exists(&bad_tag).await.expect("inspect"));
    let ancestor = format!("ancestor={id}");
    assert_eq!(docker_ok(&["ps", "-aq", "--filter", &ancestor]), "", "the failed step's container was left behind");

    let source = ImageRecipe::Build { context_sha256: "absent".into(), dockerfile: "Dockerfile".into() };
    let err = engine.ensure_image(&image_request(&bad_tag, source), &blob_path).await.expect_err("no blob");
    assert!(matches!(err, DockerError::Blob { .. }) && err.to_string().contains(&bad_tag), "{err}");
}

#[tokio::test]
async fn ensure_image_loads_an_archive_and_checks_its_tag() {
    let engine = engine();
    let tag = unique("bai-test/archived:a");
    let mut cleanup = Cleanup::new(&unique("t"));
    cleanup.images.push(tag.clone());
    let blobs = tempfile::tempdir().expect("temp dir");
    let archive = blobs.path().join("saved");
    docker_ok(&["tag", IMAGE, &tag]);
    docker_ok(&["save", "-o", &archive.display().to_string(), &tag]);
    docker_ok(&["rmi", &tag]);
    assert!(!engine.image_exists(&tag).await.expect("inspect"));

    let blob_path = |sha: &str| blobs.path().join(sha);
    let source = ImageRecipe::Archive { sha256: "saved".into() };
    let id = engine.ensure_image(&image_request(&tag, source.clone()), &blob_path).await.expect("loaded");
    assert!(engine.image_exists(&tag).await.expect("inspect"), "docker load brought the tag back");
    assert_eq!(id, docker_ok(&["image", "inspect", "--format", "{{.Id}}", IMAGE]));

    let elsewhere = unique("bai-test/elsewhere:a");
    let err = engine.ensure_image(&image_request(&elsewhere, source), &blob_path).await.expect_err("wrong tag");
    assert!(matches!(err, DockerError::NotInArchive { .. }) && err.to_string().contains(&elsewhere), "{err}");

    // What is no image archive is refused by the engine, in its own words, named for the reference.
    std::fs::write(blobs.path().join("junk"), vec![b'x'; 3 << 20]).expect("write");
    let source = ImageRecipe::Archive { sha256: "junk".into() };
    let err = engine.ensure_image(&image_request(&elsewhere, source), &blob_path).await.expect_err("junk");
    let DockerError::Load { reference, message } = &err else { panic!("not a load error: {err:?}") };
    assert_eq!(reference, &elsewhere);
    assert!(!message.is_empty() && !message.contains("reply"), "the engine's words: {err}");
}

#[tokio::test]
async fn pull_skips_present_images_and_names_an_unreachable_reference() {
    let engine = engine();
    let present = engine.ensure_image(&image_request(IMAGE, ImageRecipe::Pull), &|_| PathBuf::new()).await;
    assert!(present.as_ref().is_ok_and(|id| id.starts_with("sha256:")), "{present:?}");

    let reference = "registry.invalid/bai/none:1";
    let req = image_request(reference, ImageRecipe::Pull);
    let no_blobs = |_: &str| PathBuf::new();
    let pull = engine.ensure_image(&req, &no_blobs);
    let err = tokio::time::timeout(Duration::from_secs(90), pull)
        .await
        .expect("the engine answers a pull from an unreachable registry promptly")
        .expect_err("nothing can be pulled here");
    assert!(matches!(err, DockerError::Pull { .. }), "{err:?}");
    assert!(err.to_string().contains(reference), "{err}");
}

#[tokio::test]
async fn the_engine_reports_its_version() {
    let version = engine().version().await.expect("version");
    assert_eq!(version, docker_ok(&["version", "--format", "{{.Server.Version}}"]));
}
