//! Host-key checking inside the handshake, with OpenSSH's rules: `known_hosts` (hashed names,
//! `@revoked`), `accept-new` on request, a changed key always refused; and the precise error for a refusal.
//! The same handler files each channel's window as the server grants it, for uploads ([`super::flow`]).

use super::*;

/// The host-key decision taken inside the handshake, kept so that [`connect`] can say precisely why it
/// refused: russh itself only reports "unknown key".
#[derive(Debug)]
pub(super) enum HostKeyVerdict {
    Known,
    Learned,
    Unknown { fingerprint: String },
    Changed { fingerprint: String, line: usize },
    Revoked { fingerprint: String, line: usize },
    Certificate,
    Unreadable { reason: String },
}

/// The russh handler: verifies the server's host key against `known_hosts`.
pub(super) struct Client {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) known_hosts: PathBuf,
    pub(super) accept_new: bool,
    pub(super) verdict: Arc<Mutex<Option<HostKeyVerdict>>>,
    /// Each open channel's window, for uploads that keep pace with the node ([`super::flow`]).
    pub(super) windows: Arc<flow::Windows>,
}

impl Client {
    fn decide(&self, key: &PublicKey) -> HostKeyVerdict {
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        // `@revoked` first: it wins over a line that lists the key, and a revoked key is never learnt.
        // russh's check skips those lines (see `known_hosts`).
        let text = match std::fs::read_to_string(&self.known_hosts) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return HostKeyVerdict::Unreadable { reason: e.to_string() },
        };
        let blob = key.to_openssh().ok().and_then(|k| k.split_whitespace().nth(1).map(str::to_string));
        if let Some(line) = blob.and_then(|b| known_hosts::revoked_line(&text, &self.host, self.port, &b)) {
            return HostKeyVerdict::Revoked { fingerprint, line };
        }
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => HostKeyVerdict::Known,
            Ok(false) if self.accept_new => {
                match russh::keys::known_hosts::learn_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
                    Ok(()) => HostKeyVerdict::Learned,
                    Err(e) => HostKeyVerdict::Unreadable { reason: format!("cannot record the new key: {e}") },
                }
            }
            Ok(false) => HostKeyVerdict::Unknown { fingerprint },
            Err(russh::keys::Error::KeyChanged { line }) => {
                HostKeyVerdict::Changed { fingerprint, line: file_line(&self.known_hosts, line) }
            }
            Err(e) => HostKeyVerdict::Unreadable { reason: e.to_string() },
        }
    }
}

/// The line of `path` that russh calls `line`: russh skips `#` comment lines when it counts, a person
/// removing the line counts every line.
pub(super) fn file_line(path: &Path, line: usize) -> usize {
    let Ok(text) = std::fs::read_to_string(path) else { return line };
    text.split('\n')
        .enumerate()
        .filter(|(_, content)| !content.starts_with('#'))
        .nth(line.saturating_sub(1))
        .map_or(line, |(index, _)| index + 1)
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_public_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let verdict = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => self.decide(key),
            // We never advertise certificate algorithms, so a certificate here is a misbehaving server.
            PublicKeyOrCertificate::Certificate(_) => HostKeyVerdict::Certificate,
        };
        let accept = matches!(verdict, HostKeyVerdict::Known | HostKeyVerdict::Learned);
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
        Ok(accept)
    }

    async fn channel_open_confirmation(
        &mut self,
        id: russh::ChannelId,
        _max_packet_size: u32,
        window_size: u32,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.windows.opened(id, window_size);
        Ok(())
    }

    async fn window_adjusted(
        &mut self,
        id: russh::ChannelId,
        new_size: u32,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        self.windows.adjusted(id, new_size);
        Ok(())
    }

    async fn channel_close(&mut self, id: russh::ChannelId, _session: &mut client::Session) -> Result<(), Self::Error> {
        self.windows.closed(id);
        Ok(())
    }
}

/// The precise error for a refused host key, or `None` when the handshake failed for another reason.
pub(super) fn host_key_error(target: &SshTarget, verdict: Option<HostKeyVerdict>) -> Option<SshError> {
    let node = target.node.clone();
    let known_hosts = target.known_hosts.display().to_string();
    Some(match verdict? {
        HostKeyVerdict::Known | HostKeyVerdict::Learned => return None,
        HostKeyVerdict::Unknown { fingerprint } => {
            SshError::UnknownHostKey { node, host: target.host.clone(), port: target.port, fingerprint, known_hosts }
        }
        HostKeyVerdict::Changed { fingerprint, line } => SshError::HostKeyChanged {
            node,
            host: target.host.clone(),
            port: target.port,
            fingerprint,
            known_hosts,
            line,
        },
        HostKeyVerdict::Revoked { fingerprint, line } => SshError::HostKeyRevoked {
            node,
            host: target.host.clone(),
            port: target.port,
            fingerprint,
            known_hosts,
            line,
        },
        HostKeyVerdict::Certificate => SshError::KnownHosts {
            node,
            host: target.host.clone(),
            port: target.port,
            known_hosts,
            reason: "the server presented a host certificate, which bai does not verify".to_owned(),
        },
        HostKeyVerdict::Unreadable { reason } => {
            SshError::KnownHosts { node, host: target.host.clone(), port: target.port, known_hosts, reason }
        }
    })
}
