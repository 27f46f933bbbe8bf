//! Installing the agent binary Nix-style under its content address (`~/.local/share/bai/agent/<sha256>/`),
//! hash-verified, never overwritten in place; the node's architecture checked against the binary's.

use super::*;

impl SshSession {
    /// Installs the agent Nix-style: the file at `local_binary` goes to
    /// `~/.local/share/bai/agent/<sha256>/bai` on the node unless a copy of the right size is already
    /// there (only a verified upload ever lands at that path). An upload crosses gzipped where the node
    /// has `gzip` ([`compressed`]), lands unpacked under a temporary name, is verified with `sha256sum` on
    /// the node, made
    /// executable and renamed into place: an installed agent is never rewritten in place. Returns the
    /// absolute remote path (it holds the node's `$HOME`: pass it through [`shell_word`] to build a
    /// command).
    ///
    /// The node's `uname -m` must match the binary's architecture (read from its ELF header; the
    /// controller's own when the file is no ELF executable).
    pub async fn install_agent(&self, local_binary: &Path) -> Result<String, SshError> {
        let (hash, local_arch) = self.hash_binary(local_binary).await?;
        // `hash` is 64 hex digits computed here: the only variable part of these commands.
        let dir = format!("\"$HOME\"/.local/share/bai/agent/{hash}");
        let probe = format!(
            "sh -c 'uname -m; printf \"%s\\n\" \"$HOME\"; if command -v gzip >/dev/null 2>&1; then echo gzip; else echo -; fi; \
             f={dir}/bai; if [ -f \"$f\" ] && [ -x \"$f\" ]; then wc -c < \"$f\" || true; fi'"
        );
        let output = self.run_checked("uname -m; wc -c (agent probe)", &probe, None::<&[u8]>).await?;
        let text = output.stdout_text();
        let mut lines = text.lines();
        let (Some(remote_arch), Some(home), Some(gzip)) = (lines.next(), lines.next(), lines.next()) else {
            return Err(SshError::Remote {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                command: "uname -m (agent probe)".to_owned(),
                status: format!("unexpected output \"{}\"", crate::untrusted::excerpt(&text, 200)),
                stderr: output.stderr_text(),
            });
        };
        let remote_arch = remote_arch.trim();
        if normalize_arch(remote_arch) != normalize_arch(local_arch) {
            return Err(SshError::ArchMismatch {
                node: self.node.clone(),
                host: self.host.clone(),
                port: self.port,
                local: local_arch.to_owned(),
                remote: remote_arch.to_owned(),
            });
        }
        let remote_path = format!("{home}/.local/share/bai/agent/{hash}/bai");
        // The content-addressed path is only ever written by a rename after the uploaded copy hashed
        // right, so a copy of the right size is trusted: hashing it again on every connection cost the
        // node a quarter of a second (most of a no-op apply). A truncated or rewritten copy is replaced.
        let local_size = std::fs::metadata(local_binary).map(|m| m.len()).ok();
        let remote_size = lines.next().and_then(|line| line.trim().parse::<u64>().ok());
        let present = remote_size.is_some() && remote_size == local_size;
        if present {
            return Ok(remote_path);
        }

        // Compressed where the node can unpack it and the controller can keep the compressed copy.
        let compressed = match gzip.trim() {
            "gzip" => {
                let binary = local_binary.to_owned();
                let sha256 = hash.clone();
                tokio::task::spawn_blocking(move || compressed::compressed(&binary, &sha256)).await.ok().flatten()
            }
            _ => None,
        };
        let unpack = if compressed.is_some() { "gzip -dc" } else { "cat" };
        let upload = format!(
            "sh -c 'set -e; d={dir}; mkdir -p \"$d\"; t=\"$d/.bai.upload.$$\"; \
             if ! {unpack} > \"$t\"; then rm -f \"$t\"; exit 1; fi; h=$(sha256sum < \"$t\"); h=${{h%% *}}; \
             if [ \"$h\" != {hash} ]; then rm -f \"$t\"; echo \"the uploaded copy hashes to $h, not {hash}\" >&2; exit 1; fi; \
             chmod 755 \"$t\"; mv -f \"$t\" \"$d/bai\"'"
        );
        let source = compressed.as_deref().unwrap_or(local_binary);
        let file = tokio::fs::File::open(source).await.map_err(|e| self.unreadable(source, e))?;
        let uploaded = self.run_checked("upload of the agent binary", &upload, Some(file)).await;
        if uploaded.is_err() && compressed.is_some() {
            // Whatever went wrong, the next try compresses afresh rather than trust the kept copy.
            compressed::forget(&hash);
        }
        uploaded?;
        Ok(remote_path)
    }

    /// Starts the agent installed for `local_binary`, in one exec: the node's shell runs the agent at its
    /// content address when the file is there, and the agent checks that it is as large as
    /// `local_binary` before it says it is ready ([`crate::protocol::AGENT_READY`]). `None` when it is
    /// not there, has another size, or cannot run (another architecture): then
    /// [`install_agent`](Self::install_agent) finds out why and puts it right. Probing first and then
    /// starting cost every connection a second exec (two more shells and `uname`, `wc` on the node).
    pub async fn start_installed_agent(&self, local_binary: &Path) -> Result<Option<AgentStream>, SshError> {
        let (hash, _) = self.hash_binary(local_binary).await?;
        let size = std::fs::metadata(local_binary).map_err(|e| self.unreadable(local_binary, e))?;
        // `hash` is 64 hex digits and the size a number, both computed here: the only variable parts.
        let command = format!(
            "sh -c 'f=\"$HOME\"/.local/share/bai/agent/{hash}/bai; if [ -f \"$f\" ] && [ -x \"$f\" ]; then exec \"$f\" agent --expect-size {}; fi; echo absent'",
            size.len()
        );
        let mut stream = self.exec_stream(&command).await?;
        // Byte by byte: what follows the line is the agent's, and must stay in the stream.
        let mut line = Vec::new();
        let mut byte = [0u8];
        while line.len() <= crate::protocol::AGENT_READY.len() {
            match stream.reader.read(&mut byte).await {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                // The shell said why on stderr (another architecture: `Exec format error`); the install
                // path's probe tells it properly.
                _ => return Ok(None),
            }
        }
        Ok((line == crate::protocol::AGENT_READY.as_bytes()).then_some(stream))
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
