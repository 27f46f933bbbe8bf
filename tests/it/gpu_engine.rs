//! The harness's GPU engine (tests/harness/dockerd.rs), which GPU sessions are tested on without GPUs: a
//! device request reaches the container through Docker's own NVIDIA driver path, and engines started side
//! by side share nothing with each other or the main engine and leave nothing behind.

use crate::support::images::{docker, test_image};
use crate::support::{GpuEngine, dockerd};

/// The environment of a container run with `--gpus <gpus>` (or without, for None) on `engine`.
fn env_with_gpus(engine: &GpuEngine, image: &str, gpus: Option<&str>) -> Vec<String> {
    let mut args = vec!["run", "--rm"];
    if let Some(gpus) = gpus {
        args.extend(["--gpus", gpus]);
    }
    // The test image holds busybox alone, without its applets' links.
    args.extend([image, "busybox", "env"]);
    engine.docker_ok(&args).lines().map(str::to_owned).collect()
}

#[test]
fn the_harness_engine_passes_requested_device_ids_to_the_container() {
    let engine = GpuEngine::start();
    let image = test_image();
    engine.load_from_main(image);

    let env = env_with_gpus(&engine, image, Some("\"device=GPU-a,GPU-b\""));
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-a,GPU-b".to_owned()), "{env:#?}");
    let env = env_with_gpus(&engine, image, Some("2"));
    assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=0,1".to_owned()), "{env:#?}");
    let env = env_with_gpus(&engine, image, None);
    assert!(!env.iter().any(|line| line.starts_with("NVIDIA_")), "{env:#?}");

    // Docker's driver ran the stand-in hook before each container that asked for GPUs, and only those.
    let calls = engine.hook_calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls.iter().all(|call| call.starts_with("prestart {")), "{calls:#?}");
}

#[test]
fn two_harness_engines_at_once_share_nothing_and_leave_nothing_behind() {
    let image = test_image();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(GpuEngine::start);
        let b = s.spawn(GpuEngine::start);
        (a.join().expect("the first engine starts"), b.join().expect("the second engine starts"))
    });
    assert_ne!(a.name(), b.name());
    assert_ne!(a.docker_host(), b.docker_host());

    // The same container name on both engines: each sees its own, the main engine neither.
    let container = format!("gpu-engine-probe-{}", std::process::id());
    for engine in [&a, &b] {
        engine.load_from_main(image);
        engine.docker_ok(&["run", "-d", "--name", &container, "--gpus", "1", image]);
    }
    for engine in [&a, &b] {
        let listed = engine.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]);
        assert_eq!(listed, container, "{} lists other containers than its own", engine.name());
    }
    let on_main = docker(&["ps", "-a", "-q", "--filter", &format!("name={container}")]);
    assert!(on_main.status.success() && on_main.stdout.is_empty(), "the main engine sees {on_main:?}");

    // Dropped with their containers running (Drop removes them before it stops dockerd, which would
    // otherwise wait out each one's stop timeout): gone whole.
    let names = [a.name().to_owned(), b.name().to_owned()];
    drop((a, b));
    for name in &names {
        let remains = dockerd::remains_of(name);
        assert!(remains.is_empty(), "{name} left behind: {remains:#?}");
    }
}
