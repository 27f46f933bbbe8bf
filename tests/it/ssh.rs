//! The SSH transport against real OpenSSH servers: host-key rules, authentication, commands, the agent
//! stream's latency, and the Nix-style agent install.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bai::transport::client::AgentClient;
use bai::transport::ssh::{self, ExitStatus, SshError, SshSession, SshTarget, Started};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::support::sshd::{Sshd, USER};

async fn connect(target: &SshTarget) -> SshSession {
    match ssh::connect(target).await {
        Ok(session) => session,
        Err(e) => panic!("connect to {}:{} failed: {e:?}", target.host, target.port),
    }
}

async fn connect_err(target: &SshTarget) -> SshError {
    match ssh::connect(target).await {
        Ok(_) => panic!("connect to {}:{} unexpectedly succeeded", target.host, target.port),
        Err(e) => e,
    }
}

fn keygen(path: &Path, passphrase: &str) {
    keygen_type(path, "ed25519", passphrase);
}

fn keygen_type(path: &Path, kind: &str, passphrase: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .expect("run ssh-keygen");
    assert!(status.success());
}

/// A session to node `i` that asks for the agent to cross compressed (ssh_config's `Compression yes`).
async fn connect_compressing(sshd: &Sshd, i: usize) -> SshSession {
    let mut target = sshd.target(i);
    target.compression = true;
    connect(&target).await
}

/// Where bai keeps the compressed agents it sends (`$XDG_CACHE_HOME/bai/agents`, else `~/.cache/…`).
fn agent_cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").expect("HOME")).join(".cache"))
        .join("bai/agents")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_report_output_status_and_stderr() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;

    let uname = session.run("uname -m", None).await.expect("run uname -m");
    let local = Command::new("uname").arg("-m").output().expect("local uname -m");
    assert_eq!(uname.status, ExitStatus::Code(0));
    assert_eq!(uname.stdout, local.stdout);

    let failing = session.run("echo out; echo err >&2; exit 3", None).await.expect("run a failing command");
    assert_eq!(failing.status, ExitStatus::Code(3));
    assert!(!failing.success());
    assert_eq!(failing.stdout_text(), "out\n");
    assert_eq!(failing.stderr_text(), "err\n");

    let piped = session.run("cat; echo done", Some(b"hello\n")).await.expect("run cat with stdin");
    assert_eq!(piped.stdout_text(), "hello\ndone\n");

    // A command that exits without reading its (large) input still returns, with its status.
    let input = vec![b'x'; 16 << 20];
    let early = tokio::time::timeout(Duration::from_secs(5), session.run("exit 5", Some(&input)))
        .await
        .expect("no hang on unread input")
        .expect("run exit 5");
    assert_eq!(early.status, ExitStatus::Code(5));
    let counted = session.run("wc -c", Some(&input)).await.expect("run wc -c");
    assert_eq!(counted.stdout_text().trim(), input.len().to_string());

    // The node's sessions see the harness's per-node home.
    let home = session.run("printf %s \"$HOME\"", None).await.expect("run printf");
    assert_eq!(home.stdout_text(), sshd.home(0).display().to_string());
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_carries_stdio_and_reports_stderr_and_exit() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;

    let mut process = session.spawn("echo starting >&2; cat; echo bye >&2; exit 7").await.expect("spawn");
    process.stream.writer.write_all(b"ping\n").await.expect("write");
    let mut reader = BufReader::new(process.stream.reader);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read");
    assert_eq!(line, "ping\n");
    // Shutting the writer down is EOF on the remote stdin: `cat` ends, and so does the command.
    process.stream.writer.shutdown().await.expect("shutdown");
    line.clear();
    assert_eq!(reader.read_line(&mut line).await.expect("read to end"), 0, "stdout ends: {line:?}");
    let status = tokio::time::timeout(Duration::from_secs(5), process.status.wait()).await.expect("exit in time");
    assert_eq!(status, ExitStatus::Code(7));
    assert_eq!(process.status.stderr_text(), "starting\nbye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_is_refused_with_its_fingerprint_until_accepted() {
    let sshd = Sshd::start(1);
    let mut target = sshd.target(0);
    target.known_hosts = sshd.scratch().join("fresh_known_hosts");

    let keygen = Command::new("ssh-keygen").arg("-lf").arg(sshd.host_pubkey_path(0)).output().expect("ssh-keygen -lf");
    let listed = String::from_utf8_lossy(&keygen.stdout).into_owned();
    let expected = listed.split_whitespace().nth(1).expect("ssh-keygen -lf prints a fingerprint").to_owned();
    assert!(expected.starts_with("SHA256:"), "{listed}");

    let error = connect_err(&target).await;
    let SshError::UnknownHostKey { ref node, port, ref fingerprint, .. } = error else {
        panic!("expected UnknownHostKey, got {error:?}")
    };
    assert_eq!(fingerprint, &expected);
    assert_eq!(node, "node0");
    assert_eq!(port, sshd.port(0));
    let message = error.to_string();
    assert!(message.contains("node0") && message.contains(&format!("127.0.0.1:{}", sshd.port(0))), "{message}");
    let help = miette::Diagnostic::help(&error).map(|h| h.to_string()).unwrap_or_default();
    let keyscan = format!("ssh-keyscan -p {} 127.0.0.1 >> {}", sshd.port(0), target.known_hosts.display());
    assert!(help.contains("--accept-new-host-keys") && help.contains(&keyscan), "{help}");
    let code = miette::Diagnostic::code(&error).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("bai::ssh::unknown_host_key"));
    assert!(!target.known_hosts.exists(), "a refused key is not recorded");

    target.accept_new_host_keys = true;
    connect(&target).await.close().await;
    let recorded = std::fs::read_to_string(&target.known_hosts).expect("known_hosts written");
    assert!(recorded.contains(&sshd.known_hosts_line(0)), "{recorded}");

    target.accept_new_host_keys = false;
    connect(&target).await.close().await;
    assert_eq!(std::fs::read_to_string(&target.known_hosts).expect("known_hosts"), recorded, "nothing appended twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_even_when_accepting_new_keys() {
    let sshd = Sshd::start(1);
    let other = sshd.scratch().join("impostor");
    keygen(&other, "");
    let impostor = std::fs::read_to_string(other.with_extension("pub")).expect("impostor key");
    let known_hosts = sshd.scratch().join("changed_known_hosts");
    let contents = format!("# a comment line\n[127.0.0.1]:{} {}", sshd.port(0), impostor);
    std::fs::write(&known_hosts, &contents).expect("write known_hosts");

    let mut target = sshd.target(0);
    target.known_hosts = known_hosts.clone();
    target.accept_new_host_keys = true;
    let error = connect_err(&target).await;
    let SshError::HostKeyChanged { line, ref fingerprint, .. } = error else {
        panic!("expected HostKeyChanged, got {error:?}")
    };
    // The line as an editor counts it, comment included.
    assert_eq!(line, 2);
    assert!(fingerprint.starts_with("SHA256:"));
    assert!(error.to_string().contains("node0"), "{error}");
    let help = miette::Diagnostic::help(&error).map(|h| h.to_string()).unwrap_or_default();
    assert!(help.contains("never accepted automatically") && help.contains("line 2"), "{help}");
    assert_eq!(std::fs::read_to_string(&known_hosts).expect("known_hosts"), contents, "never rewritten");
}

/// `line` with its host names hashed as `ssh-keygen -H` writes them (`|1|salt|hash key`).
fn hashed(dir: &Path, line: &str) -> String {
    let file = dir.join("to_hash");
    std::fs::write(&file, format!("{line}\n")).expect("write");
    let out = Command::new("ssh-keygen").arg("-q").arg("-H").arg("-f").arg(&file).output().expect("ssh-keygen -H");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&file).expect("hashed file");
    text.lines().find(|l| l.starts_with("|1|")).expect("a hashed line").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_host_key_is_refused_even_where_another_line_lists_it() {
    let sshd = Sshd::start(1);
    let key = sshd.host_pubkey(0);
    let listed = sshd.known_hosts_line(0);
    let here = format!("[127.0.0.1]:{}", sshd.port(0));
    let known_hosts = sshd.scratch().join("revoked_known_hosts");
    let mut target = sshd.target(0);
    target.known_hosts = known_hosts.clone();

    // Listed, and revoked on a later line (as OpenSSH writes it: the marker, the host, the key).
    let contents = format!("{listed}\n# revoked after the key leaked\n@revoked {here} {key}\n");
    std::fs::write(&known_hosts, &contents).expect("write known_hosts");
    let error = connect_err(&target).await;
    let SshError::HostKeyRevoked { line, ref fingerprint, .. } = error else {
        panic!("expected HostKeyRevoked, got {error:?}")
    };
    assert_eq!(line, 3, "the line as an editor counts it");
    assert!(fingerprint.starts_with("SHA256:"));
    let message = error.to_string();
    assert!(message.contains("node0") && message.contains("revoked"), "{message}");
    let code = miette::Diagnostic::code(&error).map(|c| c.to_string());
    assert_eq!(code.as_deref(), Some("bai::ssh::host_key_revoked"));
    let help = miette::Diagnostic::help(&error).map(|h| h.to_string()).unwrap_or_default();
    assert!(help.contains("line 3") && help.contains("@revoked"), "{help}");

    // Revoked under a hashed host name, a wildcard, or a pattern list: refused alike.
    for revoked in
        [hashed(sshd.scratch(), &format!("{here} {key}")), format!("*.example,127.0.0.*,[127.0.0.1]:* {key}")]
    {
        std::fs::write(&known_hosts, format!("@revoked {revoked}\n{listed}\n")).expect("write known_hosts");
        let error = connect_err(&target).await;
        assert!(matches!(error, SshError::HostKeyRevoked { line: 1, .. }), "{revoked}: {error:?}");
    }

    // As in OpenSSH, a revocation is for the hosts its line names: revoked for another host, or with
    // this one negated, the key is still this host's.
    for revoked in [format!("other.example {key}"), format!("*,!{here} {key}")] {
        std::fs::write(&known_hosts, format!("{listed}\n@revoked {revoked}\n")).expect("write known_hosts");
        connect(&target).await.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_for_every_host_is_never_learnt() {
    let sshd = Sshd::start(1);
    let known_hosts = sshd.scratch().join("revoked_known_hosts");
    let contents = format!("@revoked * {}\n", sshd.host_pubkey(0));
    std::fs::write(&known_hosts, &contents).expect("write known_hosts");
    let mut target = sshd.target(0);
    target.known_hosts = known_hosts.clone();
    target.accept_new_host_keys = true;
    let error = connect_err(&target).await;
    assert!(matches!(error, SshError::HostKeyRevoked { line: 1, .. }), "{error:?}");
    assert_eq!(std::fs::read_to_string(&known_hosts).expect("known_hosts"), contents, "nothing learnt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures_say_who_and_what() {
    let sshd = Sshd::start(1);

    let stranger = sshd.scratch().join("stranger");
    keygen(&stranger, "");
    let mut target = sshd.target(0);
    target.identity = Some(stranger.clone());
    let error = connect_err(&target).await;
    let SshError::AuthFailed { ref user, ref tried, .. } = error else { panic!("expected AuthFailed, got {error:?}") };
    assert_eq!(user, USER);
    assert_eq!(tried, &[format!("key {}", stranger.display())]);
    assert!(error.to_string().contains("`bai-test`"), "{error}");

    let mut target = sshd.target(0);
    target.user = "nobody-here".to_owned();
    let error = connect_err(&target).await;
    assert!(matches!(&error, SshError::AuthFailed { user, .. } if user == "nobody-here"), "{error:?}");

    let missing = sshd.scratch().join("no-such-key");
    let mut target = sshd.target(0);
    target.identity = Some(missing.clone());
    let error = connect_err(&target).await;
    assert!(matches!(&error, SshError::Identity { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&missing.display().to_string()) && message.contains("node0"), "{message}");

    let locked = sshd.scratch().join("locked");
    keygen(&locked, "a passphrase");
    let mut target = sshd.target(0);
    target.identity = Some(locked);
    let error = connect_err(&target).await;
    assert!(matches!(&error, SshError::EncryptedKey { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_nodes_fail_fast() {
    // Refused: nothing listens on a port that was just free.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let sshd = Sshd::start(1);
    let mut target = sshd.target(0);
    target.port = port;
    let error = connect_err(&target).await;
    assert!(matches!(&error, SshError::Connect { .. }), "{error:?}");

    // Silent: the kernel accepts the TCP connection, but no SSH banner ever comes.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    target.port = silent.local_addr().expect("addr").port();
    target.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = connect_err(&target).await;
    assert!(matches!(&error, SshError::ConnectTimeout { .. }), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_is_installed_once_by_content_and_repaired_by_rename() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;
    let binary = Path::new(env!("CARGO_BIN_EXE_bai-agent"));
    let hash = sha256_hex(&std::fs::read(binary).expect("read the agent binary"));
    let dir = sshd.home(0).join(".local/share/bai/agent").join(&hash);
    let expected = dir.join("bai").display().to_string();

    // Started where it is, in one exec, only once it is there; until then that exec says what the node is,
    // and the install needs no probe of its own.
    let facts = match session.start_installed_agent(binary).await.expect("start") {
        Started::Absent(facts) => facts,
        Started::Ready(_) => panic!("nothing installed yet, yet an agent started"),
        Started::NotReady => panic!("nothing installed: the shell says so and what the node is"),
    };
    let uname = Command::new("uname").arg("-m").output().expect("uname");
    assert_eq!(facts.arch, String::from_utf8_lossy(&uname.stdout).trim());
    assert_eq!(facts.home, sshd.home(0).display().to_string());
    assert!(facts.gzip, "gzip is on this machine");
    let started = Instant::now();
    let path = session.install_agent(binary, Some(&facts)).await.expect("first install");
    let upload = started.elapsed();
    assert_eq!(path, expected);
    let installed = std::fs::metadata(&path).expect("installed file");
    assert_eq!(installed.mode() & 0o777, 0o755);
    let remote = session.run(&format!("sha256sum {path}"), None).await.expect("remote sha256sum");
    assert_eq!(remote.stdout_text().split_whitespace().next(), Some(hash.as_str()));
    let version = session.run(&format!("{} --version", ssh::shell_word(&path)), None).await.expect("run the agent");
    assert!(version.success() && version.stdout_text().starts_with("bai-agent "), "{version:?}");

    let started = Instant::now();
    assert_eq!(session.install_agent(binary, None).await.expect("second install"), expected);
    let skip = started.elapsed();
    let again = std::fs::metadata(&path).expect("installed file");
    assert_eq!((again.ino(), again.mtime_nsec()), (installed.ino(), installed.mtime_nsec()), "not uploaded again");
    println!("agent install: upload {upload:?}, present {skip:?}");
    let stream =
        session.start_installed_agent(binary).await.expect("start").ready().expect("the installed agent is ready");
    let mut client = AgentClient::new(stream);
    let hello = client.hello("ssh", "node0", false, "test").await.expect("the agent answers after its ready line");
    assert_eq!(hello.arch, std::env::consts::ARCH);
    drop(client);

    // Corrupt the installed copy in place, as the node's user could.
    let corrupt = format!("printf corrupt > \"$HOME/.local/share/bai/agent/{hash}/bai\"");
    assert!(session.run(&corrupt, None).await.expect("corrupt").success());
    let rewritten = session.start_installed_agent(binary).await.expect("start");
    assert!(matches!(rewritten, Started::NotReady), "a rewritten copy is not run, and is not taken for absent");
    assert_eq!(session.install_agent(binary, None).await.expect("repair"), expected);
    assert!(session.start_installed_agent(binary).await.expect("start").ready().is_some(), "the repaired copy runs");
    let repaired = std::fs::metadata(&path).expect("repaired file");
    assert_ne!(repaired.ino(), installed.ino(), "replaced through a new file and a rename");
    assert_eq!(sha256_hex(&std::fs::read(&path).expect("read repaired")), hash);
    let leftovers: Vec<_> = std::fs::read_dir(&dir).expect("agent dir").flatten().map(|e| e.file_name()).collect();
    assert_eq!(leftovers, ["bai"], "no temporary file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_crosses_compressed_from_the_cache_and_a_damaged_entry_is_made_afresh() {
    let sshd = Sshd::start(1);
    let session = connect_compressing(&sshd, 0).await;
    let cache_dir = agent_cache_dir();
    std::fs::create_dir_all(&cache_dir).expect("mkdir");
    // zstd where the node has it (this one does: scripts/test installs it); gzip where it has only that.
    for (codec, zstd) in [("zst", true), ("gz", false)] {
        // An ELF header for this machine and a body no other test uploads: its cache entry is this test's.
        let mut content = vec![0u8; 64];
        content[..4].copy_from_slice(b"\x7fELF");
        content[4] = 2;
        content[5] = 1;
        content[18] = if std::env::consts::ARCH == "aarch64" { 0xb7 } else { 0x3e };
        content.extend(format!("{codec} {:?} {}", Instant::now(), std::process::id()).bytes());
        content.extend((0..2_000_000u32).map(|i| (i % 7) as u8));
        let binary = sshd.scratch().join(format!("bai-own-{codec}"));
        std::fs::write(&binary, &content).expect("write binary");
        let hash = sha256_hex(&content);
        let cache = cache_dir.join(format!("{hash}.{codec}"));
        let mut facts = match session.start_installed_agent(&binary).await.expect("start") {
            Started::Absent(facts) => facts,
            _ => panic!("nothing is installed for this binary"),
        };
        assert!(facts.zstd && facts.gzip, "zstd and gzip are on this machine");
        facts.zstd = zstd;

        // A kept entry that unpacks to something else never crosses: it is checked and made afresh, and
        // the node unpacks exactly the binary.
        let damaged = match codec {
            "zst" => zstd::encode_all(&b"not the agent"[..], 3).expect("zstd"),
            _ => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                std::io::Write::write_all(&mut gz, b"not the agent").expect("gzip");
                gz.finish().expect("gzip")
            }
        };
        std::fs::write(&cache, &damaged).expect("plant");
        let path = session.install_agent(&binary, Some(&facts)).await.expect("installed");
        assert_eq!(sha256_hex(&std::fs::read(&path).expect("read installed")), hash, "{codec}");
        assert_ne!(std::fs::read(&cache).expect("kept"), damaged, "{codec}: the damaged entry is made afresh");
        let kept = std::fs::metadata(&cache).expect("the compressed copy is kept").len();
        assert!(kept < content.len() as u64 / 20, "{codec}: {kept} bytes crossed for {}", content.len());
        let _ = std::fs::remove_file(&cache);
    }
}

/// Unless ssh_config says `Compression yes`, the agent crosses as it is, whatever the node could unpack:
/// nothing is compressed, so nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_crosses_as_it_is_unless_compression_is_asked_for() {
    let sshd = Sshd::start(1);
    let binary = Path::new(env!("CARGO_BIN_EXE_bai-agent"));
    let content = std::fs::read(binary).expect("read the agent binary");
    let hash = sha256_hex(&content);
    let kept = |codec: &str| agent_cache_dir().join(format!("{hash}.{codec}"));
    for codec in ["zst", "gz"] {
        let _ = std::fs::remove_file(kept(codec));
    }
    let session = connect(&sshd.target(0)).await;
    let Started::Ready(stream) = session.start_agent(binary).await.expect("start") else {
        panic!("a fresh node gets the agent and it starts: {}", sshd.log(0))
    };
    drop(stream);
    let (placed, mode, names) = installed(&sshd, &hash);
    assert!(placed == content, "the installed agent is the binary");
    assert_eq!((mode, names), (0o755, vec!["bai".to_owned()]), "placed whole, no temporary file left");
    assert!(!kept("zst").exists() && !kept("gz").exists(), "nothing compressed, nothing kept");
}

/// A directory of links to the tools a node's shell needs to start and install the agent, plus
/// `unpackers`: a `PATH` with only those.
fn tools_dir(root: &Path, name: &str, unpackers: &[&str]) -> std::path::PathBuf {
    let bin = root.join(name);
    std::fs::create_dir_all(&bin).expect("mkdir");
    let base = ["sh", "uname", "dd", "head", "mkdir", "chmod", "mv", "rm", "cat", "openssl", "sha256sum"];
    for tool in base.iter().chain(unpackers) {
        let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{tool} is on this machine")), bin.join(tool))
            .expect("link");
    }
    bin
}

/// A stand-in agent no other test uploads: a script that says it is ready, then echoes its input. Started
/// from an upload's temporary name (`--place`), it renames itself into place as the agent does, unhashed.
fn script_agent(sshd: &Sshd, name: &str) -> (std::path::PathBuf, String) {
    let script = format!(
        "#!/bin/sh\n# {name} {:?} {}\ncase \" $* \" in *\" --place \"*) mv -f \"$0\" \"${{0%/*}}/bai\" || exit 1;; esac\n\
         echo bai-agent-ready\nexec cat\n",
        Instant::now(),
        std::process::id()
    );
    let path = sshd.scratch().join(name);
    std::fs::write(&path, &script).expect("write the stand-in agent");
    (path, sha256_hex(script.as_bytes()))
}

/// The `bai` installed for `hash` on node 0, and what else its directory holds.
fn installed(sshd: &Sshd, hash: &str) -> (Vec<u8>, u32, Vec<String>) {
    let dir = sshd.home(0).join(".local/share/bai/agent").join(hash);
    let file = dir.join("bai");
    let content = std::fs::read(&file).unwrap_or_default();
    let mode = std::fs::metadata(&file).map(|m| m.mode() & 0o777).unwrap_or(0);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    (content, mode, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_gets_the_agent_on_the_exec_that_starts_it() {
    let mut sshd = Sshd::start(1);
    let execs = |sshd: &Sshd| sshd.log(0).matches("Starting session: command").count();
    let cache_dir = agent_cache_dir();

    // The real agent, as it is: one exec uploads it, places it and runs it, and it answers.
    let session = connect(&sshd.target(0)).await;
    let binary = Path::new(env!("CARGO_BIN_EXE_bai-agent"));
    let content = std::fs::read(binary).expect("read the agent binary");
    let hash = sha256_hex(&content);
    let before = execs(&sshd);
    let Started::Ready(stream) = session.start_agent(binary).await.expect("start") else {
        panic!("a fresh node gets the agent and it starts: {}", sshd.log(0))
    };
    assert_eq!(execs(&sshd) - before, 1, "one exec for a fresh node");
    let mut client = AgentClient::new(stream);
    let hello = client.hello("ssh", "node0", false, "test").await.expect("the agent answers after its ready line");
    assert_eq!(hello.arch, std::env::consts::ARCH);
    drop(client);
    let (placed, mode, names) = installed(&sshd, &hash);
    assert!(placed == content, "the installed agent is the binary");
    assert_eq!((mode, names), (0o755, vec!["bai".to_owned()]), "placed whole, no temporary file left");

    // A kept entry that unpacks to something else never crosses: the node runs what it unpacks before
    // that hashes itself, so the controller checks an entry it did not make, and makes it afresh.
    let session = connect_compressing(&sshd, 0).await;
    let (script, hash) = script_agent(&sshd, "agent-damaged");
    std::fs::create_dir_all(&cache_dir).expect("mkdir");
    let cache = cache_dir.join(format!("{hash}.zst"));
    let damaged = zstd::encode_all(&b"not the agent"[..], 3).expect("zstd");
    std::fs::write(&cache, &damaged).expect("plant");
    let before = execs(&sshd);
    assert!(session.start_agent(&script).await.expect("start").ready().is_some(), "made afresh, it starts");
    assert_eq!(execs(&sshd) - before, 1, "checked and made afresh before it crossed");
    assert_ne!(std::fs::read(&cache).expect("the entry made afresh"), damaged, "the damaged entry is dropped");
    let (placed, mode, names) = installed(&sshd, &hash);
    assert_eq!(placed, std::fs::read(&script).expect("read"), "the installed agent is the binary");
    assert_eq!((mode, names), (0o755, vec!["bai".to_owned()]), "no temporary file left behind");
    let _ = std::fs::remove_file(&cache);

    // A binary for another architecture is not uploaded: the node says what it is, and the exec ends.
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    (header[4], header[5]) = (2, 1);
    header[18] = if std::env::consts::ARCH == "aarch64" { 0x3e } else { 0xb7 };
    let foreign = sshd.scratch().join("bai-foreign");
    std::fs::write(&foreign, &header).expect("write foreign binary");
    let Started::Absent(facts) = session.start_agent(&foreign).await.expect("start") else {
        panic!("a foreign binary is neither started nor uploaded")
    };
    assert_eq!(facts.home, sshd.home(0).display().to_string());
    let foreign_hash = sha256_hex(&header);
    assert!(!sshd.home(0).join(".local/share/bai/agent").join(&foreign_hash).exists(), "nothing uploaded");
    let waiting = || {
        std::fs::read_dir("/proc").expect("/proc").flatten().any(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(&foreign_hash))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!waiting(), "the shell that waited for an upload has ended");
    drop(session);

    // Asked to compress: a node without zstd gets gzip; one with neither gets the binary as it is. Each in
    // one exec, whether `dd` can count the bytes or `head -c` has to.
    let rounds = [("gzip", &["gzip"][..]), ("raw", &[][..]), ("ddless", &[][..]), ("headless", &["zstd", "gzip"][..])];
    for (round, unpackers) in rounds {
        let tools = tools_dir(sshd.scratch(), &format!("tools-{round}"), unpackers);
        // A `dd` that cannot count bytes (an old coreutils or busybox); and in the end neither it nor `head`:
        // the upload on the starting exec fails, and the install on execs of its own still works.
        let broken: &[&str] = match round {
            "ddless" => &["dd"],
            "headless" => &["dd", "head"],
            _ => &[],
        };
        for tool in broken {
            std::fs::remove_file(tools.join(tool)).expect("unlink");
            std::os::unix::fs::symlink("/bin/false", tools.join(tool)).expect("link");
        }
        sshd.reconfigure(0, "", &[&format!("PATH={}", tools.display())]);
        let session = connect_compressing(&sshd, 0).await;
        let (script, hash) = script_agent(&sshd, &format!("agent-{round}"));
        let (other, _) = script_agent(&sshd, &format!("agent-{round}-facts"));
        let Started::Absent(facts) = session.start_installed_agent(&other).await.expect("start") else {
            panic!("{round}: nothing is installed for this binary")
        };
        assert_eq!(
            (facts.zstd, facts.gzip),
            (round == "headless", round == "gzip" || round == "headless"),
            "{round}: the node's PATH is the tools'"
        );
        let before = execs(&sshd);
        let Started::Ready(stream) = session.start_agent(&script).await.expect("start") else {
            panic!("{round}: a fresh node gets the agent and it starts: {}", sshd.log(0))
        };
        let want = if round == "headless" { 3 } else { 1 };
        assert_eq!(execs(&sshd) - before, want, "{round}: execs for a fresh node");
        let (mut reader, mut writer) = (BufReader::new(stream.reader), stream.writer);
        writer.write_all(b"ping\n").await.expect("write");
        writer.flush().await.expect("flush");
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("read");
        assert_eq!(line, "ping\n", "{round}: the stream is the agent's once it said it is ready");
        drop((reader, writer, stream.keepalive));
        let (placed, mode, names) = installed(&sshd, &hash);
        assert_eq!(placed, std::fs::read(&script).expect("read"), "{round}: the installed agent is the binary");
        assert_eq!((mode, names), (0o755, vec!["bai".to_owned()]), "{round}");
        let gz = cache_dir.join(format!("{hash}.gz"));
        assert_eq!(gz.exists(), round == "gzip", "{round}: crossed as gzip only where the node has nothing better");
        let _ = std::fs::remove_file(gz);
        let _ = std::fs::remove_file(cache_dir.join(format!("{hash}.zst")));
    }
}

/// A node whose tools damage what crosses (here: one byte more) never gets that installed: the real agent,
/// started from its temporary name, finds itself the wrong size and removes itself. Compressed, the `zstd`
/// that damages it unpacks on the install on execs of its own too, whose hash on the node refuses the copy
/// and says so; as it is, the `dd` that damaged it is not used there, and that install places the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_damaged_on_the_node_is_never_placed() {
    let mut sshd = Sshd::start(1);
    for (round, tool) in [("zstd", "zstd"), ("raw", "dd")] {
        let tools = tools_dir(sshd.scratch(), &format!("tools-lying-{round}"), &[]);
        let real = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
        let real = real.unwrap_or_else(|| panic!("{tool} is here"));
        let _ = std::fs::remove_file(tools.join(tool));
        std::fs::write(tools.join(tool), format!("#!/bin/sh\n{} \"$@\" && printf x\n", real.display())).expect("write");
        std::fs::set_permissions(tools.join(tool), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        sshd.reconfigure(0, "", &[&format!("PATH={}", tools.display())]);
        // The real agent, made a binary no other test uploads by bytes after its end (it runs all the same).
        let mut content = std::fs::read(env!("CARGO_BIN_EXE_bai-agent")).expect("read the agent binary");
        content.extend_from_slice(format!("{round} {:?} {}", Instant::now(), std::process::id()).as_bytes());
        let binary = sshd.scratch().join(format!("bai-agent-damaged-on-the-node-{round}"));
        std::fs::write(&binary, &content).expect("write");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let hash = sha256_hex(&content);

        let session =
            if round == "zstd" { connect_compressing(&sshd, 0).await } else { connect(&sshd.target(0)).await };
        let execs = || sshd.log(0).matches("Starting session: command").count();
        let before = execs();
        match session.start_agent(&binary).await {
            Err(e) if round == "zstd" => {
                let err = e.to_string();
                assert!(err.contains(&format!("not {hash}")), "the node's hash says why: {err}");
                assert_eq!(execs() - before, 2, "the starting exec, then the install on an exec of its own");
                let (placed, _, names) = installed(&sshd, &hash);
                assert!(placed.is_empty() && names.is_empty(), "nothing placed, nothing left behind: {names:?}");
            }
            Ok(Started::Ready(stream)) if round == "raw" => {
                drop(stream);
                assert_eq!(execs() - before, 3, "the starting exec, the install on an exec of its own, the start");
                let (placed, mode, names) = installed(&sshd, &hash);
                assert!(placed == content, "only the undamaged copy is placed");
                assert_eq!((mode, names), (0o755, vec!["bai".to_owned()]), "no temporary file left behind");
            }
            Err(e) => panic!("{round}: {e}"),
            Ok(started) => panic!("{round}: a damaged upload is never started: {}", started.ready().is_some()),
        }
        drop(session);
        let _ = std::fs::remove_file(agent_cache_dir().join(format!("{hash}.zst")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_for_another_architecture_is_refused() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;
    // A minimal ELF header for the architecture this machine is not.
    let (machine, arch) = if std::env::consts::ARCH == "aarch64" { (0x3e_u8, "x86_64") } else { (0xb7, "aarch64") };
    let mut header = vec![0u8; 64];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = 2;
    header[5] = 1;
    header[18] = machine;
    let foreign = sshd.scratch().join("bai-foreign");
    std::fs::write(&foreign, header).expect("write foreign binary");

    let error = match session.install_agent(&foreign, None).await {
        Ok(path) => panic!("installed a foreign binary at {path}"),
        Err(e) => e,
    };
    let SshError::ArchMismatch { ref local, ref remote, .. } = error else {
        panic!("expected ArchMismatch, got {error:?}")
    };
    assert_eq!(local, arch);
    let uname = Command::new("uname").arg("-m").output().expect("uname");
    assert_eq!(remote, String::from_utf8_lossy(&uname.stdout).trim());
    assert!(error.to_string().contains("node0"), "{error}");
    assert!(!sshd.home(0).join(".local/share/bai").exists(), "nothing uploaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_stream_answers_in_milliseconds() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;
    let stream = session.exec_stream("cat").await.expect("exec cat");
    let mut writer = stream.writer;
    let mut reader = BufReader::new(stream.reader);
    let mut line = String::new();

    let mut rtts = Vec::new();
    for i in 0..50 {
        let sent = format!("request {i}\n");
        let started = Instant::now();
        writer.write_all(sent.as_bytes()).await.expect("write");
        writer.flush().await.expect("flush");
        line.clear();
        reader.read_line(&mut line).await.expect("read");
        rtts.push(started.elapsed());
        assert_eq!(line, sent);
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    println!("ssh stream round trip: median {median:?}, min {:?}, max {:?}", rtts[0], rtts[rtts.len() - 1]);
    assert!(median < Duration::from_millis(5), "median round trip {median:?} (Nagle left on?)");
    drop(stream.keepalive);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_ends_the_remote_command() {
    let sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;
    let stream = session.exec_stream("echo $$; exec cat").await.expect("exec cat");
    let mut reader = BufReader::new(stream.reader);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read pid");
    let pid: u32 = line.trim().parse().expect("a pid");
    let proc = Path::new("/proc").join(pid.to_string());
    assert!(proc.exists(), "cat runs as {pid}");

    drop((reader, stream.writer, stream.keepalive));
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!proc.exists(), "the remote command {pid} outlived its stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_ends_its_streams_and_comes_back_on_restart() {
    let mut sshd = Sshd::start(1);
    let session = connect(&sshd.target(0)).await;
    let process = session.spawn("cat").await.expect("exec cat");
    let mut reader = BufReader::new(process.stream.reader);

    sshd.kill(0);
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "stdout ends when the node dies: {read:?}");
    let status = tokio::time::timeout(Duration::from_secs(5), process.status.wait()).await.expect("status in time");
    assert_eq!(status, ExitStatus::Unknown);
    assert!(ssh::connect(&sshd.target(0)).await.is_err(), "nothing listens on a killed node");

    sshd.restart(0);
    let again = connect(&sshd.target(0)).await;
    assert!(again.run("true", None).await.expect("run after restart").success());
}

/// A private ssh-agent holding the harness's client key; killed on drop.
struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Agent {
    fn start(sshd: &Sshd) -> Agent {
        let socket = sshd.scratch().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not create its socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        let added = Command::new("ssh-add")
            .arg(sshd.client_key_path())
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .expect("run ssh-add");
        assert!(added.status.success(), "ssh-add: {}", String::from_utf8_lossy(&added.stderr));
        Agent { child, socket }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_identity_keys_come_from_ssh_agent_then_the_home() {
    let sshd = Sshd::start(1);
    let mut target = sshd.target(0);
    target.identity = None;
    let empty_home = sshd.scratch().join("empty-home");
    std::fs::create_dir(&empty_home).expect("empty home");

    let agent = Agent::start(&sshd);
    let keys = ssh::KeySources { agent_socket: Some(agent.socket.clone()), home: Some(empty_home.clone()) };
    let session = ssh::connect_with(&target, &keys).await.expect("log in with the agent's key");
    assert!(session.run("true", None).await.expect("run").success());
    drop(agent);

    let home = sshd.scratch().join("home-with-key");
    std::fs::create_dir_all(home.join(".ssh")).expect("home/.ssh");
    std::fs::copy(sshd.client_key_path(), home.join(".ssh/id_ed25519")).expect("copy key");
    let keys = ssh::KeySources { agent_socket: None, home: Some(home) };
    ssh::connect_with(&target, &keys).await.expect("log in with ~/.ssh/id_ed25519").close().await;

    let keys = ssh::KeySources { agent_socket: None, home: Some(empty_home) };
    let error = match ssh::connect_with(&target, &keys).await {
        Ok(_) => panic!("logged in without a key"),
        Err(e) => e,
    };
    assert!(matches!(&error, SshError::AuthFailed { tried, .. } if tried.is_empty()), "{error:?}");
    assert!(error.to_string().contains("no key to offer"), "{error}");

    let locked_home = sshd.scratch().join("locked-home");
    std::fs::create_dir_all(locked_home.join(".ssh")).expect("home/.ssh");
    keygen(&locked_home.join(".ssh/id_ed25519"), "a passphrase");
    let keys = ssh::KeySources { agent_socket: None, home: Some(locked_home) };
    let error = match ssh::connect_with(&target, &keys).await {
        Ok(_) => panic!("logged in with a locked key"),
        Err(e) => e,
    };
    assert!(matches!(&error, SshError::EncryptedKey { .. }), "{error:?}");
    assert!(miette::Diagnostic::help(&error).is_some_and(|h| h.to_string().contains("ssh-add")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_keys_sign_with_sha2() {
    // OpenSSH 8.8+ refuses the legacy SHA-1 `ssh-rsa` signature: the key must sign with rsa-sha2-*.
    let sshd = Sshd::start(1);
    let rsa = sshd.scratch().join("rsa");
    keygen_type(&rsa, "rsa", "");
    sshd.authorize_key(&std::fs::read_to_string(rsa.with_extension("pub")).expect("rsa public key"));
    let mut target = sshd.target(0);
    target.identity = Some(rsa);
    connect(&target).await.close().await;
    assert!(sshd.log(0).contains("Accepted publickey for bai-test"), "{}", sshd.log(0));
}
