//! Authenticating: an identity file, else ssh-agent and `~/.ssh/id_*` as OpenSSH finds them; RSA keys
//! sign with SHA-2; a refusal says which user was refused with which keys.

use super::*;

/// Where keys come from when a target names no identity file: what OpenSSH reads from its environment.
#[derive(Clone, Debug, Default)]
pub struct KeySources {
    /// ssh-agent's socket (`SSH_AUTH_SOCK`).
    pub agent_socket: Option<PathBuf>,
    /// The home holding `.ssh/id_ed25519` and `.ssh/id_rsa`.
    pub home: Option<PathBuf>,
}

impl KeySources {
    /// `SSH_AUTH_SOCK` and `HOME`, as a command line tool finds them.
    pub fn from_env() -> KeySources {
        KeySources {
            agent_socket: std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).map(PathBuf::from),
            home: std::env::var_os("HOME").filter(|s| !s.is_empty()).map(PathBuf::from),
        }
    }
}

pub(super) fn load_identity(target: &SshTarget, path: &Path) -> Result<PrivateKey, SshError> {
    russh::keys::load_secret_key(path, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => SshError::EncryptedKey {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
        },
        russh::keys::Error::IO(io) => SshError::Identity {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
            reason: io.to_string(),
        },
        other => SshError::Identity {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
            reason: format!("not a usable private key: {other}"),
        },
    })
}

/// Tries the explicit identity alone when there is one; otherwise ssh-agent's keys, then the default key
/// files, like OpenSSH without `-i`.
pub(super) async fn authenticate(
    handle: &mut Handle<Client>,
    target: &SshTarget,
    explicit: Option<(&Path, PrivateKey)>,
    keys: &KeySources,
) -> Result<(), SshError> {
    let session_error = |source: russh::Error| SshError::Session {
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        source: Box::new(source),
    };
    let mut tried = Vec::new();
    if let Some((path, key)) = explicit {
        if try_key(handle, &target.user, key).await.map_err(session_error)? {
            return Ok(());
        }
        tried.push(format!("key {}", path.display()));
        return Err(auth_failed(target, tried));
    }

    if let Some(socket) = &keys.agent_socket {
        match AgentClient::connect_uds(socket).await {
            Ok(mut agent) => match agent.request_identities().await {
                Ok(identities) => {
                    for identity in identities {
                        let AgentIdentity::PublicKey { key, comment } = identity else { continue };
                        let hash = if key.algorithm().is_rsa() { rsa_hash(handle).await } else { None };
                        let result = handle.authenticate_publickey_with(&target.user, key, hash, &mut agent).await;
                        // An agent that declines to sign is a refusal of that key, not of the session.
                        if matches!(result, Ok(AuthResult::Success)) {
                            return Ok(());
                        }
                        tried.push(format!(
                            "ssh-agent key {}",
                            if comment.is_empty() { "(no comment)" } else { &comment }
                        ));
                    }
                }
                Err(e) => tried.push(format!("ssh-agent (cannot list keys: {e})")),
            },
            Err(e) => tried.push(format!("ssh-agent (unreachable: {e})")),
        }
    }

    let mut encrypted = None;
    if let Some(home) = &keys.home {
        for name in ["id_ed25519", "id_rsa"] {
            let path = home.join(".ssh").join(name);
            if !path.exists() {
                continue;
            }
            match russh::keys::load_secret_key(&path, None) {
                Ok(key) => {
                    if try_key(handle, &target.user, key).await.map_err(session_error)? {
                        return Ok(());
                    }
                    tried.push(format!("key {}", path.display()));
                }
                Err(russh::keys::Error::KeyIsEncrypted) => {
                    tried.push(format!("key {} (encrypted)", path.display()));
                    encrypted.get_or_insert(path);
                }
                Err(e) => tried.push(format!("key {} (unreadable: {e})", path.display())),
            }
        }
    }
    // A passphrase-protected default key may well be the right one: say so rather than "refused".
    if let Some(path) = encrypted {
        return Err(SshError::EncryptedKey {
            node: target.node.clone(),
            host: target.host.clone(),
            port: target.port,
            path: path.display().to_string(),
        });
    }
    Err(auth_failed(target, tried))
}

pub(super) fn auth_failed(target: &SshTarget, tried: Vec<String>) -> SshError {
    SshError::AuthFailed {
        node: target.node.clone(),
        host: target.host.clone(),
        port: target.port,
        user: target.user.clone(),
        tried,
    }
}

/// The signature hash for an RSA key: the best the server announced, or `None` (legacy `ssh-rsa`, SHA-1)
/// when it announced nothing, as servers from before RFC 8332 do.
pub(super) async fn rsa_hash(handle: &Handle<Client>) -> Option<HashAlg> {
    handle.best_supported_rsa_hash().await.ok().flatten().flatten()
}

pub(super) async fn try_key(handle: &mut Handle<Client>, user: &str, key: PrivateKey) -> Result<bool, russh::Error> {
    let hash = if key.algorithm().is_rsa() { rsa_hash(handle).await } else { None };
    let result = handle.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash)).await?;
    Ok(matches!(result, AuthResult::Success))
}
