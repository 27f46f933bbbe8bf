//! Installing the agent binary Nix-style under its content address (`~/.local/share/bai/agent/<sha256>/`),
//! hash-verified, never overwritten in place; the node's architecture checked against the binary's.
//!
//! The agent crosses as it is (2.5 MB for a release `bai-agent`), as OpenSSH, `scp` and `nix copy` send
//! what they send, unless ssh_config says `Compression yes` for the node: then as zstd (0.92 MB) where the
//! node has `zstd`, else gzip ([`compressed`]). Unpacking was most of what an install cost a node: as it
//! is, an install costs the node a third less CPU (`zstd` alone was 40 % of it), for 1.5 MB more on a
//! link that a lab's nodes reach at LAN speed; an operator on a slow link to the lab says
//! `Compression yes`, as they would for `ssh` (docs/performance.md).

use super::*;

/// What the node's shell says of itself before an install, a line each: its architecture, its `$HOME`,
/// and which of `zstd` and `gzip` it has (`-` for neither). The architecture is `uname -m`, read by the
/// shell itself from `/proc/sys/kernel/arch` where the kernel has it (Linux 6.1 on): one process fewer.
const FACTS: &str = "{ read -r a < /proc/sys/kernel/arch && echo \"$a\"; } 2>/dev/null || uname -m; printf \"%s\\n\" \"$HOME\"; u=-; command -v zstd >/dev/null 2>&1 && u=zstd; \
    command -v gzip >/dev/null 2>&1 && u=\"$u gzip\"; echo \"$u\"";

/// What the node's shell says when no agent is installed to start.
const ABSENT: &str = "absent";

/// The line after [`FACTS`]' when the starting exec then waits for an upload ([`receive`]).
const FACTS_END: &str = "end";

/// Hashes the upload `$t` into `$h` (the hex digest first): OpenSSL where the node has it, which uses the
/// CPU's SHA extensions (a 5 MB agent: 7 ms where `sha256sum` takes 17), else coreutils' or busybox's
/// `sha256sum`.
const HASH: &str = "h=; if command -v openssl >/dev/null 2>&1; then h=$(openssl dgst -sha256 -r < \"$t\" 2>/dev/null) || h=; fi; \
    [ -n \"$h\" ] || h=$(sha256sum < \"$t\")";

/// At most this much of what the node's shell prints about itself is read.
const FACTS_LIMIT: u64 = 4096;

/// What a node is, as far as installing the agent needs: read by the same exec that found no agent to
/// start ([`Started::Absent`]), or by a probe of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// `uname -m`.
    pub arch: String,
    /// The login's `$HOME`, where the agent is installed.
    pub home: String,
    /// `zstd` is there to unpack a compressed upload.
    pub zstd: bool,
    /// `gzip` is there to unpack a compressed upload.
    pub gzip: bool,
    /// The size of the agent installed under the content address, when one is there and executable.
    installed_size: Option<u64>,
}

impl NodeFacts {
    /// Reads [`FACTS`]' lines, then the installed size where the probe added one. The architecture and
    /// home are the node's words, shown in messages: escaped and cut short here.
    fn parse(text: &str) -> Option<NodeFacts> {
        let mut lines = text.lines();
        let (arch, home, unpackers) = (lines.next()?.trim(), lines.next()?, lines.next()?);
        let has = |tool: &str| unpackers.split_whitespace().any(|word| word == tool);
        let mut facts = NodeFacts {
            arch: arch.to_owned(),
            home: home.to_owned(),
            zstd: has("zstd"),
            gzip: has("gzip"),
            installed_size: lines.next().and_then(|line| line.trim().parse().ok()),
        };
        crate::untrusted::clean(&mut facts.arch);
        crate::untrusted::clean(&mut facts.home);
        Some(facts)
    }
}

/// How starting an installed agent went.
pub enum Started {
    /// The agent runs and said it is ready: its stream.
    Ready(AgentStream),
    /// Nothing executable is installed under the content address; what the node's shell said of itself
    /// in the same exec.
    Absent(NodeFacts),
    /// Something is there but did not say it is ready (another size, another architecture): a probe of
    /// its own finds out what.
    NotReady,
}

impl Started {
    /// The stream, when the agent is ready.
    pub fn ready(self) -> Option<AgentStream> {
        match self {
            Started::Ready(stream) => Some(stream),
            Started::Absent(_) | Started::NotReady => None,
        }
    }
}

impl SshSession {
    /// Installs the agent Nix-style: the file at `local_binary` goes to
    /// `~/.local/share/bai/agent/<sha256>/bai` on the node unless a copy of the right size is already
    /// there (only a verified upload ever lands at that path). An upload crosses as it is, or as zstd or
    /// gzip where ssh_config asks for compression (see the module doc), lands (unpacked) under a
    /// temporary name, is hashed on the node ([`HASH`]) against the binary's SHA-256, made executable and
    /// renamed into place: an installed agent is never rewritten in place. Returns the absolute remote
    /// path (it holds the node's `$HOME`: pass it through [`shell_word`] to build a command).
    ///
    /// The node's `uname -m` must match the binary's architecture (read from its ELF header; the
    /// controller's own when the file is no ELF executable).
    ///
    /// `facts`: what the node said of itself when [`start_installed_agent`](Self::start_installed_agent)
    /// found nothing to start ([`Started::Absent`]); `None` probes the node first (one exec more).
    pub async fn install_agent(&self, local_binary: &Path, facts: Option<&NodeFacts>) -> Result<String, SshError> {
        let (hash, local_arch) = self.hash_binary(local_binary).await?;
        // `hash` is 64 hex digits computed here: the only variable part of these commands.
        let dir = format!("\"$HOME\"/.local/share/bai/agent/{hash}");
        let probed;
        let facts = match facts {
            Some(facts) => facts,
            None => {
                let probe = format!(
                    "sh -c '{FACTS}; f={dir}/bai; if [ -f \"$f\" ] && [ -x \"$f\" ]; then wc -c < \"$f\" || true; fi'"
                );
                let output = self.run_checked("uname -m; wc -c (agent probe)", &probe, None::<&[u8]>).await?;
                let text = output.stdout_text();
                probed = NodeFacts::parse(&text).ok_or_else(|| SshError::Remote {
                    node: self.node.clone(),
                    host: self.host.clone(),
                    port: self.port,
                    command: "uname -m (agent probe)".to_owned(),
                    status: format!("unexpected output \"{}\"", crate::untrusted::excerpt(&text, 200)),
                    stderr: output.stderr_text(),
                })?;
                &probed
            }
        };
        if normalize_arch(&facts.arch) != normalize_arch(local_arch) {
            return Err(SshError::ArchMismatch {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                local: local_arch.to_owned(),
                remote: facts.arch.clone(),
            });
        }
        let remote_path = format!("{}/.local/share/bai/agent/{hash}/bai", facts.home);
        // The content-addressed path is only ever written by a rename after the uploaded copy hashed
        // right, so a copy of the right size is trusted: hashing it again on every connection cost the
        // node a quarter of a second (most of a no-op apply). A truncated or rewritten copy is replaced.
        let local_size = std::fs::metadata(local_binary).map(|m| m.len()).ok();
        if facts.installed_size.is_some() && facts.installed_size == local_size {
            return Ok(remote_path);
        }

        // Compressed where the node can unpack it and the controller can keep the compressed copy.
        let compressed = self.compressed_for(local_binary, &hash, facts).await;
        let unpack = compressed.as_ref().map_or("cat", |(_, codec)| codec.unpack());
        let upload = format!(
            "sh -c 'set -e; d={dir}; mkdir -p \"$d\"; t=\"$d/.bai.upload.$$\"; \
             if ! {unpack} > \"$t\"; then rm -f \"$t\"; exit 1; fi; {}'",
            placed(&hash)
        );
        let source = compressed.as_ref().map_or(local_binary, |(file, _)| file.as_path());
        let file = tokio::fs::File::open(source).await.map_err(|e| self.unreadable(source, e))?;
        let uploaded = self.run_checked("upload of the agent binary", &upload, Some(file)).await;
        if let (Err(_), Some((_, codec))) = (&uploaded, &compressed) {
            // Whatever went wrong, the next try compresses afresh rather than trust the kept copy.
            compressed::forget(&hash, *codec);
        }
        uploaded?;
        Ok(remote_path)
    }

    /// Starts the agent installed for `local_binary`, in one exec: the node's shell runs the agent at its
    /// content address when the file is there, and the agent checks that it is as large as
    /// `local_binary` before it says it is ready ([`crate::protocol::AGENT_READY`]). When nothing is there
    /// the shell says so and what the node is ([`Started::Absent`]), so that a fresh node's install needs
    /// no probe of its own; when something is there that does not say it is ready (another size, another
    /// architecture), [`Started::NotReady`]: [`install_agent`](Self::install_agent) finds out why and puts
    /// it right.
    pub async fn start_installed_agent(&self, local_binary: &Path) -> Result<Started, SshError> {
        self.start(local_binary, false).await
    }

    /// [`start_installed_agent`](Self::start_installed_agent), but a node with nothing installed gets the
    /// agent in the same exec: once the shell has said what the node is, the upload crosses on that
    /// exec's stdin, is unpacked under a temporary name, and the shell becomes it: the agent hashes its
    /// own file and renames it into place, or removes it and ends ([`receive`]). A fresh node costs one
    /// exec, not three (each is a session sshd sets up and two shells). [`Started::Absent`] only when the
    /// node's architecture is not the binary's: [`install_agent`](Self::install_agent) says so. Where the
    /// upload on the starting exec fails, [`install_agent`](Self::install_agent) installs on an exec of its
    /// own and the agent is started again.
    pub async fn start_agent(&self, local_binary: &Path) -> Result<Started, SshError> {
        self.start(local_binary, true).await
    }

    async fn start(&self, local_binary: &Path, install: bool) -> Result<Started, SshError> {
        let (hash, local_arch) = self.hash_binary(local_binary).await?;
        let size = std::fs::metadata(local_binary).map_err(|e| self.unreadable(local_binary, e))?.len();
        // `hash` is 64 hex digits and the size a number, both computed here: the only variable parts.
        let command = format!(
            "sh -c 'f=\"$HOME\"/.local/share/bai/agent/{hash}/bai; if [ -f \"$f\" ] && [ -x \"$f\" ]; then exec \"$f\" agent --expect-size {size}; fi; echo {ABSENT}; {FACTS}; echo {FACTS_END}; {}'",
            receive(&hash, size)
        );
        let mut spawned = self.spawn_parts(&command).await?;
        let line = first_line(&mut spawned.stdout, crate::protocol::AGENT_READY.len()).await;
        if line.as_deref() == Some(crate::protocol::AGENT_READY.as_bytes()) {
            return Ok(Started::Ready(spawned.into_process().stream));
        }
        // Whatever is not handed over as a stream is closed when `spawned` is dropped: the remote command
        // reads the end of its input, and ends.
        if line.as_deref() != Some(ABSENT.as_bytes()) {
            // The shell said why on stderr (another architecture: `Exec format error`); the install
            // path's probe tells it properly.
            return Ok(Started::NotReady);
        }
        // Line by line up to the end of the facts: the shell then waits, and must find its stdin untouched.
        let (mut facts, mut waiting) = (Vec::new(), false);
        while let Some(line) = first_line(&mut spawned.stdout, FACTS_LIMIT as usize).await {
            waiting = line == FACTS_END.as_bytes();
            if waiting || facts.len() + line.len() > FACTS_LIMIT as usize {
                break;
            }
            facts.extend(line);
            facts.push(b'\n');
        }
        let Some(facts) = NodeFacts::parse(&String::from_utf8_lossy(&facts)) else {
            return Ok(Started::NotReady);
        };
        if !install || !waiting || normalize_arch(&facts.arch) != normalize_arch(local_arch) {
            // The waiting shell reads the end of its input, and ends.
            return Ok(Started::Absent(facts));
        }
        match self.upload_to_start(spawned, local_binary, &hash, &facts).await {
            // The node could not take the agent on the starting exec (a `head` without `-c`, a kept copy
            // that unpacked wrong, …): the install on execs of its own tries once more, afresh, and says
            // why if it fails too.
            Err(SshError::Remote { .. }) => {
                self.install_agent(local_binary, Some(&facts)).await?;
                Box::pin(self.start(local_binary, false)).await
            }
            started => started,
        }
    }

    /// The upload [`start`](Self::start)'s waiting shell reads ([`receive`]), then the agent's ready line.
    async fn upload_to_start(
        &self,
        mut spawned: Spawned,
        local_binary: &Path,
        hash: &str,
        facts: &NodeFacts,
    ) -> Result<Started, SshError> {
        let what = "upload of the agent binary";
        let compressed = self.compressed_for(local_binary, hash, facts).await;
        let (source, word) = match &compressed {
            Some((file, codec)) => (file.as_path(), codec.word()),
            None => (local_binary, "raw"),
        };
        // The size of what was opened, and never more than that sent: the shell reads exactly as many.
        let opened = async {
            let file = tokio::fs::File::open(source).await?;
            let len = file.metadata().await?.len();
            Ok::<_, std::io::Error>((file, len))
        };
        let (file, len) = match opened.await {
            Ok(opened) => opened,
            Err(e) => return Err(self.unreadable(source, e)),
        };
        let header = format!("{word} {len}\n");
        let id = spawned.write().id();
        let window = self.handle.windows.watch(id);
        let input = AsyncReadExt::chain(header.as_bytes(), file.take(len));
        let sent = send_paced(spawned.write(), input, Some(window)).await;
        self.handle.windows.closed(id);
        let failed = |status: String, stderr: String| SshError::Remote {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            command: what.to_owned(),
            status,
            stderr,
        };
        match sent {
            Ok(n) if n == header.len() as u64 + len => {}
            Ok(_) => {
                // Cut short (the file shrank while read): the shell would wait for the rest.
                return Err(self.unreadable(source, std::io::ErrorKind::UnexpectedEof.into()));
            }
            Err(FeedError::Local(e)) => return Err(self.unreadable(source, e)),
            // The shell ended before it took all of it: its status and stderr below say why.
            Err(FeedError::Channel(_)) => {}
        }
        let line = first_line(&mut spawned.stdout, crate::protocol::AGENT_READY.len()).await;
        if line.as_deref() == Some(crate::protocol::AGENT_READY.as_bytes()) {
            return Ok(Started::Ready(spawned.into_process().stream));
        }
        // The shell or the agent ended, or is told to by the end of its input: read to the end (bounded,
        // in size and time) for the status and stderr.
        let _ = spawned.write().eof().await;
        let (mut rest, mut sink) = ((&mut spawned.stdout).take(MAX_OUTPUT as u64), Vec::new());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), rest.read_to_end(&mut sink)).await;
        let _ = spawned.write().close().await;
        let status = tokio::time::timeout(std::time::Duration::from_secs(1), spawned.status.wait()).await;
        let status = status.map_or_else(|_| "no exit status".to_owned(), |s| s.to_string());
        if let Some((_, codec)) = &compressed {
            // Whatever went wrong, the next try compresses afresh rather than trust the kept copy.
            compressed::forget(hash, *codec);
        }
        Err(failed(status, spawned.status.stderr_text()))
    }

    /// The agent packed for the node where ssh_config asks for compression and the node can unpack it
    /// (`None`: it crosses as it is), from the controller's cache.
    async fn compressed_for(
        &self,
        local_binary: &Path,
        hash: &str,
        facts: &NodeFacts,
    ) -> Option<(PathBuf, compressed::Codec)> {
        if !self.compression {
            return None;
        }
        let codec = compressed::Codec::for_node(facts.zstd, facts.gzip)?;
        let binary = local_binary.to_owned();
        let sha256 = hash.to_owned();
        tokio::task::spawn_blocking(move || compressed::compressed(&binary, &sha256, codec))
            .await
            .ok()
            .flatten()
            .map(|file| (file, codec))
    }

    fn unreadable(&self, binary: &Path, source: std::io::Error) -> SshError {
        SshError::Io {
            node: self.node.clone(),
            host: self.host.clone(),
            port: self.port,
            what: format!("cannot read the agent binary {}", binary.display()),
            source,
        }
    }

    /// SHA-256 (hex) and architecture of the binary to install.
    async fn hash_binary(&self, path: &Path) -> Result<(String, &'static str), SshError> {
        let owned = path.to_owned();
        let identified = tokio::task::spawn_blocking(move || identify_binary(&owned)).await;
        let io_error = |source| self.unreadable(path, source);
        match identified {
            Ok(Ok(id)) => Ok((id.sha256, id.arch)),
            Ok(Err(e)) => Err(io_error(e)),
            Err(join) => Err(io_error(std::io::Error::other(join.to_string()))),
        }
    }
}

/// The tail of an upload's script once the upload `$t` is unpacked in `$d`: hashes it ([`HASH`]) against
/// `hash` (64 hex digits computed by the controller), makes it executable and renames it to `$d/bai`.
fn placed(hash: &str) -> String {
    format!(
        "{HASH}; h=${{h%% *}}; \
         if [ \"$h\" != {hash} ]; then rm -f \"$t\"; echo \"the uploaded copy hashes to $h, not {hash}\" >&2; exit 1; fi; \
         chmod 755 \"$t\"; mv -f \"$t\" \"$d/bai\""
    )
}

/// What [`SshSession::start_agent`]'s shell runs once it said what the node is, with `$f` the agent's
/// content address: it reads one line, `CODEC LENGTH` (`zstd`, `gzip` or `raw`), then exactly LENGTH bytes
/// (`dd … iflag=count_bytes` reads no further, nor `head -c` where `dd` cannot count bytes, and nothing
/// follows until the agent says it is ready), unpacks them (a raw upload goes straight to the file) under
/// a temporary name beside `$f`, makes that executable and becomes it with `--place`: the agent hashes its
/// own file against `hash` and renames it to `$f`, or removes it and ends ([`crate::agent::place`]), so
/// the node needs neither a hashing tool nor `mv` here. Any other line, or the end of its input, ends it.
///
/// `dd` takes the channel a megabyte at a time where `head -c` moves 8 KiB per read and per write: sshd
/// and the copy cost 50 fresh loopback nodes a fifth less CPU each (BENCHMARKS.md, session 17). A `dd`
/// without `count_bytes` (GNU coreutils before 8.16, busybox before 1.33) refuses it before it reads
/// anything, and `head -c` takes over.
fn receive(hash: &str, size: u64) -> String {
    use compressed::Codec;
    let arms: String =
        [Codec::Zstd, Codec::Gzip].iter().map(|c| format!("{}) u=\"{}\";; ", c.word(), c.unpack())).collect();
    format!(
        "read -r c n || exit 0; case $c in {arms}raw) u=;; *) exit 0;; esac; \
         case $n in \"\"|*[!0-9]*) exit 2;; esac; d=\"${{f%/bai}}\"; mkdir -p \"$d\" || exit 1; \
         t=\"$d/.bai.upload.$$\"; \
         r() {{ dd bs=1M count=\"$n\" iflag=count_bytes,fullblock status=none 2>/dev/null || head -c \"$n\"; }}; \
         if ! {{ if [ -n \"$u\" ]; then r | $u; else r; fi; }} > \"$t\"; then \
         rm -f \"$t\"; echo \"the upload did not unpack\" >&2; exit 1; fi; \
         chmod 755 \"$t\" || {{ rm -f \"$t\"; exit 1; }}; exec \"$t\" agent --expect-size {size} --place {hash}"
    )
}

/// One line of `reader` without its newline, read byte by byte (what follows belongs to someone else);
/// `None` at the end of the input, on an error, or past `limit` bytes.
async fn first_line(reader: &mut (impl AsyncRead + Unpin), limit: usize) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        match reader.read(&mut byte).await {
            Ok(1) if byte[0] == b'\n' => return Some(line),
            Ok(1) if line.len() < limit => line.push(byte[0]),
            _ => return None,
        }
    }
}

/// The sha256 (hex) under which [`SshSession::install_agent`] installs `path` on nodes: what `bai.lock`
/// records as the agent.
pub fn agent_sha256(path: &Path) -> std::io::Result<String> {
    identify_binary(path).map(|id| id.sha256)
}

/// What [`SshSession::install_agent`] needs to know of a local binary.
#[derive(Clone)]
pub(super) struct BinaryId {
    sha256: String,
    pub(super) arch: &'static str,
}

/// Hashes a binary and reads its architecture (the controller's own when it is no ELF file). Cached by
/// path, size and modification time: an apply installs the same binary on every node at once, and hashing
/// a debug build takes a noticeable fraction of a second.
pub(super) fn identify_binary(path: &Path) -> std::io::Result<BinaryId> {
    type Cache = Mutex<HashMap<(PathBuf, u64, SystemTime), BinaryId>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Cache::default);
    let metadata = std::fs::metadata(path)?;
    let key = (path.to_owned(), metadata.len(), metadata.modified()?);
    // Held while hashing: an apply reaches every node at once, and all but the first wait for its result
    // rather than hashing the same file again.
    let mut cached = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(id) = cached.get(&key) {
        return Ok(id.clone());
    }

    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut header = Vec::with_capacity(ELF_HEADER);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|chunk| !chunk.is_empty()) else { break };
        let wanted = ELF_HEADER.saturating_sub(header.len()).min(n);
        header.extend_from_slice(chunk.get(..wanted).unwrap_or_default());
        hasher.update(chunk);
    }
    let id = BinaryId {
        sha256: hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        arch: elf_arch(&header).unwrap_or(std::env::consts::ARCH),
    };
    cached.insert(key, id.clone());
    Ok(id)
}

/// Bytes of an ELF header up to and including `e_machine`.
pub(super) const ELF_HEADER: usize = 20;

/// The architecture an ELF executable is built for, named as `uname -m` names it.
pub(super) fn elf_arch(header: &[u8]) -> Option<&'static str> {
    if header.get(..4)? != b"\x7fELF" {
        return None;
    }
    let little_endian = *header.get(5)? == 1;
    let bytes = [*header.get(18)?, *header.get(19)?];
    let machine = if little_endian { u16::from_le_bytes(bytes) } else { u16::from_be_bytes(bytes) };
    Some(match machine {
        0x03 => "i686",
        0x28 => "arm",
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        0x15 => "ppc64",
        0x16 => "s390x",
        _ => return None,
    })
}

/// One name per architecture: `uname -m` and Rust disagree on some (`arm64`/`aarch64`, `amd64`/`x86_64`).
pub(super) fn normalize_arch(arch: &str) -> &str {
    match arch {
        "amd64" | "x64" => "x86_64",
        "arm64" | "armv8" | "armv8l" => "aarch64",
        "ppc64le" => "ppc64",
        "i386" | "i486" | "i586" | "x86" => "i686",
        other if other.starts_with("armv") => "arm",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`HASH`] on a file with only `tools` on the PATH: `name` or `name=program`, linked from this
    /// machine.
    fn hash_with(tools: &[&str]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in tools {
            let (name, program) = tool.split_once('=').unwrap_or((tool, tool));
            let found = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(program)).find(|p| p.exists());
            std::os::unix::fs::symlink(found.unwrap_or_else(|| panic!("{program} is on this machine")), bin.join(name))
                .unwrap();
        }
        let file = dir.path().join("upload");
        std::fs::write(&file, b"the agent").unwrap();
        let script = format!("t={}; {HASH}; printf %s \"${{h%% *}}\"", file.display());
        let out = std::process::Command::new("/bin/sh").arg("-c").arg(script).env("PATH", &bin).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_upload_is_hashed_by_openssl_or_else_sha256sum() {
        let want: String = Sha256::digest(b"the agent").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash_with(&["openssl", "sha256sum"]), want);
        assert_eq!(hash_with(&["sha256sum"]), want, "no openssl on the node");
        // An openssl that cannot hash (a FIPS build refusing, a broken install): sha256sum still does.
        assert_eq!(hash_with(&["openssl=false", "sha256sum"]), want);
    }

    #[test]
    fn facts_are_read_from_the_shells_lines() {
        let facts = NodeFacts::parse("x86_64\n/home/u\ngzip\n").unwrap();
        assert_eq!(
            (facts.arch.as_str(), facts.home.as_str(), facts.gzip, facts.installed_size),
            ("x86_64", "/home/u", true, None)
        );
        let facts = NodeFacts::parse("aarch64\n/h\n-\n123\n").unwrap();
        assert_eq!((facts.gzip, facts.installed_size), (false, Some(123)));
        let facts = NodeFacts::parse("x86_64\n/h\nzstd gzip\n").unwrap();
        assert_eq!((facts.zstd, facts.gzip), (true, true));
        let facts = NodeFacts::parse("x86_64\n/h\n- gzip\n").unwrap();
        assert_eq!((facts.zstd, facts.gzip), (false, true), "the line FACTS prints without zstd");
        assert_eq!(NodeFacts::parse("x86_64\n/home/u\n"), None, "cut short");
        let hostile = NodeFacts::parse("x86_64\u{1b}[2J\n/home/\u{7}u\n-\n").unwrap();
        assert_eq!((hostile.arch.as_str(), hostile.home.as_str()), ("x86_64\\u{1b}[2J", "/home/\\u{7}u"));
    }

    /// [`FACTS`] as a node's `sh` runs it, with the file it reads the architecture from replaced.
    fn facts_reading(arch_file: &str) -> std::process::Output {
        let script = FACTS.replace("/proc/sys/kernel/arch", arch_file);
        std::process::Command::new("/bin/sh").arg("-c").arg(script).output().unwrap()
    }

    #[test]
    fn the_architecture_is_uname_m_read_from_proc_or_else_from_uname() {
        let uname = std::process::Command::new("uname").arg("-m").output().unwrap();
        let uname = String::from_utf8(uname.stdout).unwrap();
        // A kernel before 6.1 has no /proc/sys/kernel/arch: uname answers, and nothing is said of it.
        let without = facts_reading("/nonexistent/arch");
        assert!(without.status.success() && without.stderr.is_empty(), "{without:?}");
        assert_eq!(String::from_utf8_lossy(&without.stdout).lines().next(), uname.lines().next());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("arch");
        std::fs::write(&file, "riscv64\n").unwrap();
        let read = facts_reading(&file.display().to_string());
        assert_eq!(String::from_utf8_lossy(&read.stdout).lines().next(), Some("riscv64"), "read by the shell itself");
        if std::path::Path::new("/proc/sys/kernel/arch").exists() {
            let own = facts_reading("/proc/sys/kernel/arch");
            assert_eq!(
                String::from_utf8_lossy(&own.stdout).lines().next(),
                uname.lines().next(),
                "the kernel's says the same"
            );
        }
    }
}
