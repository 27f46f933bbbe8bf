//! ssh_config read as OpenSSH reads it: first match wins, patterns and negation, Include in and out of
//! blocks, Match skipped, unknown keywords ignored, bad values refused with their line.

use super::*;
use crate::jump::JumpHost;

fn config(text: &str) -> SshConfig {
    parse("cfg", text, &mut |_| Err("no includes here".into())).expect("parses")
}

fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpHost {
    JumpHost { user: user.map(str::to_string), host: host.to_string(), port }
}

const LAB: &str = "\
# the lab's login node
Host login login.lab
    HostName 10.0.0.2
    User me
    Port 2200
    Compression yes

Host gpu-?? !gpu-99 10.1.*
    ProxyJump login
    User bai
    IdentityFile ~/.ssh/id_lab
    IdentityFile %d/.ssh/id_%h
    StrictHostKeyChecking accept-new
    ServerAliveInterval 20s
    ServerAliveCountMax=5

Host gpu-*
    User other
    Port 2222
    ProxyCommand ssh -W %h:%p login
    ConnectTimeout 3

Host *
    UserKnownHostsFile ~/.ssh/lab_known_hosts ~/.ssh/known_hosts2
    SendEnv LANG
    Ciphers aes256-gcm@openssh.com
";

#[test]
fn first_match_wins_per_keyword() {
    let c = config(LAB);
    let gpu = c.query("gpu-01");
    assert_eq!(gpu.user.as_deref(), Some("bai"), "the first block that says User wins");
    assert_eq!(gpu.port, Some(2222), "a later block fills what the first left out");
    assert_eq!(gpu.connect_timeout, Some(Duration::from_secs(3)));
    assert_eq!(gpu.proxy.as_ref().map(|p| &p.0), Some(&Proxy::Jump(vec![hop(None, "login", None)])));
    assert_eq!(gpu.proxy.as_ref().map(|p| p.1.to_string()).as_deref(), Some("cfg line 9"));
    assert_eq!(gpu.identity_files, ["~/.ssh/id_lab", "%d/.ssh/id_%h"], "IdentityFile lines add up");
    assert_eq!(gpu.strict_host_key_checking, Some(StrictHostKeyChecking::AcceptNew));
    assert_eq!(gpu.server_alive_interval, Some(Duration::from_secs(20)));
    assert_eq!(gpu.server_alive_count_max, Some(5));
    assert_eq!(gpu.known_hosts.as_deref(), Some("~/.ssh/lab_known_hosts"), "the first file of several");
    assert_eq!(gpu.hostname, None);
    assert_eq!(gpu.compression, None, "OpenSSH's default: not said");

    let login = c.query("login.lab");
    assert_eq!(
        (login.hostname.as_deref(), login.user.as_deref(), login.port),
        (Some("10.0.0.2"), Some("me"), Some(2200))
    );
    assert_eq!(login.compression, Some(true));
    assert_eq!(login.proxy, None);
}

#[test]
fn patterns_negate_and_match_case_blind() {
    let c = config(LAB);
    // `!gpu-99` excludes it from the first gpu block: the second one's ProxyCommand is what it gets.
    let excluded = c.query("gpu-99");
    assert_eq!(excluded.user.as_deref(), Some("other"));
    assert!(matches!(excluded.proxy, Some((Proxy::Command(ref line), _)) if line == "ssh -W %h:%p login"));
    // `?` is one character; `*` any run.
    assert_eq!(c.query("gpu-100").user.as_deref(), Some("other"));
    assert_eq!(c.query("10.1.2.3").user.as_deref(), Some("bai"));
    assert_eq!(c.query("10.2.0.1").user, None);
    assert_eq!(c.query("GPU-01").user.as_deref(), Some("bai"), "host names compare without case");
    assert_eq!(
        c.query("elsewhere"),
        HostOptions { known_hosts: Some("~/.ssh/lab_known_hosts".into()), ..Default::default() }
    );
}

#[test]
fn options_before_any_host_apply_to_all_and_match_blocks_never_leak() {
    let c = config(
        "User early\nHost a\n  User a-user\nMatch host a exec \"true\"\n  Port 1111\n  User matched\nMatch all\n  Port 2222\nHost b\n  ProxyJump none\n",
    );
    let a = c.query("a");
    assert_eq!(a.user.as_deref(), Some("early"), "first match wins: the top of the file comes first");
    assert_eq!(a.port, Some(2222), "a Match block other than `Match all` never applies");
    assert_eq!(c.query("b").proxy.map(|p| p.0), Some(Proxy::Jump(vec![])), "`none` is a value: directly");
}

#[test]
fn hostname_expands_its_tokens() {
    let c = config("Host *.lab\n  HostName %h.internal.example\nHost x\n  HostName 100%%\n");
    assert_eq!(c.query("gpu.lab").hostname.as_deref(), Some("gpu.lab.internal.example"));
    assert_eq!(c.query("x").hostname.as_deref(), Some("100%"));
}

#[test]
fn paths_expand_home_and_tokens() {
    let tokens = PathTokens {
        home: Some(PathBuf::from("/home/me")),
        local_user: "me".into(),
        host: "10.0.0.11".into(),
        alias: "gpu-01".into(),
        user: "bai".into(),
        port: 22,
    };
    assert_eq!(expand_path("~/.ssh/id_lab", &tokens), PathBuf::from("/home/me/.ssh/id_lab"));
    assert_eq!(
        expand_path("%d/keys/%r@%h:%p-%n-%u%%", &tokens),
        PathBuf::from("/home/me/keys/bai@10.0.0.11:22-gpu-01-me%")
    );
    assert_eq!(expand_path("/abs/key", &tokens), PathBuf::from("/abs/key"));
}

#[test]
fn include_reads_in_place_and_keeps_the_block_it_sits_in() {
    let mut asked = Vec::new();
    let c = parse(
        "main",
        "Host gpu-*\n  Include lab.conf\n  Port 2200\nHost *\n  Include common/*.conf\n",
        &mut |pattern| {
            asked.push(pattern.to_string());
            Ok(match pattern {
                // Its own Host lines narrow the block around the Include, never widen it.
                "lab.conf" => {
                    vec![("lab.conf".into(), "User bai\nHost gpu-01\n  Port 1111\nHost other\n  User nobody\n".into())]
                }
                _ => vec![
                    ("common/a.conf".into(), "ConnectTimeout 7\n".into()),
                    ("common/b.conf".into(), "ConnectTimeout 9\nUser everyone\n".into()),
                ],
            })
        },
    )
    .expect("parses");
    assert_eq!(asked, ["lab.conf", "common/*.conf"]);
    let gpu = c.query("gpu-01");
    assert_eq!(
        (gpu.user.as_deref(), gpu.port, gpu.connect_timeout),
        (Some("bai"), Some(1111), Some(Duration::from_secs(7)))
    );
    assert_eq!(c.query("gpu-02").port, Some(2200), "after the Include, the including block goes on");
    assert_eq!(c.query("other").user.as_deref(), Some("everyone"), "`Host other` inside `Host gpu-*` matches nothing");
}

#[test]
fn include_nesting_is_bounded() {
    let err = parse("main", "Include self\n", &mut |_| Ok(vec![("self".into(), "Include self\n".into())]))
        .expect_err("an Include loop ends");
    assert_eq!(err.message, "`Include` nested more than 16 deep");
}

#[test]
fn bad_values_are_refused_with_their_line() {
    let err = |text: &str| {
        let e = parse("cfg", text, &mut |_| Ok(vec![])).expect_err(text);
        (e.line, e.message)
    };
    assert_eq!(err("Host a\n  Port ssh\n"), (Some(2), "`Port ssh` is not a port (1 to 65535)".into()));
    assert_eq!(err("ProxyJump a,,b\n"), (Some(1), "`ProxyJump a,,b`: an empty jump host between commas".into()));
    assert_eq!(
        err("StrictHostKeyChecking maybe\n"),
        (Some(1), "`StrictHostKeyChecking maybe`: write yes, no, ask or accept-new".into())
    );
    assert_eq!(
        err("ConnectTimeout soon\n"),
        (Some(1), "`ConnectTimeout soon` is not a time (`10`, `10s`, `1m`)".into())
    );
    assert_eq!(err("Compression fast\n"), (Some(1), "`Compression fast`: write yes or no".into()));
    assert_eq!(err("Host\n"), (Some(1), "`Host` needs at least one pattern".into()));
    assert_eq!(err("User a b\n"), (Some(1), "`User` takes one value, found 2".into()));
    assert_eq!(
        err("IdentityFile ~/.ssh/%C\n"),
        (Some(1), "`%C` in `~/.ssh/%C` is a token bai does not expand here".into())
    );
    assert_eq!(err("HostName \"open\n"), (Some(1), "a quoted value is not closed".into()));
}

#[test]
fn unknown_keywords_and_none_values_are_passed_over() {
    let c = config(
        "Host *\n  ForwardAgent yes\n  IdentityFile none\n  UserKnownHostsFile none\n  ConnectTimeout none\n  Frobnicate 3\n",
    );
    assert_eq!(c.query("x"), HostOptions::default());
    assert!(config("# only a comment\n\n").is_empty());
}

#[test]
fn strict_host_key_checking_no_is_read_but_never_turns_checking_off() {
    let c = config("Host a\n  StrictHostKeyChecking no\nHost b\n  StrictHostKeyChecking=off\n");
    assert_eq!(c.query("a").strict_host_key_checking, Some(StrictHostKeyChecking::No));
    assert_eq!(c.query("b").strict_host_key_checking, Some(StrictHostKeyChecking::No));
}

#[test]
fn files_load_from_disk_with_their_includes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().to_path_buf();
    std::fs::create_dir_all(home.join(".ssh/conf.d")).expect("mkdir");
    std::fs::write(home.join(".ssh/config"), "Include conf.d/*\nHost a\n  Port 1\n").expect("write");
    std::fs::write(home.join(".ssh/conf.d/10-a"), "Host a\n  User from-include\n").expect("write");
    let c = load(&Source::User { home: Some(home.clone()) }).expect("loads");
    assert_eq!((c.query("a").user.as_deref(), c.query("a").port), (Some("from-include"), Some(1)));

    // No ~/.ssh/config is no configuration; a named file that is missing is an error, as with `ssh -F`.
    let empty = tempfile::tempdir().expect("tempdir");
    assert!(load(&Source::User { home: Some(empty.path().to_path_buf()) }).expect("loads").is_empty());
    let missing = empty.path().join("nope");
    let err = load(&Source::File { path: missing.clone(), home: None }).expect_err("missing");
    assert!(err.to_string().starts_with(&format!("ssh_config {}: cannot read it", missing.display())), "{err}");
    assert!(load(&Source::None).expect("loads").is_empty());
}
