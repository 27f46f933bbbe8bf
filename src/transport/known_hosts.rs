//! What russh's known_hosts check leaves out: `@revoked` lines. russh reads a line's first field as its
//! host patterns, so `@revoked * ssh-ed25519 AAAA…` matches no host and is skipped: a revoked key was
//! accepted where another line listed it, and `--accept-new-host-keys` learnt a key `@revoked *` revokes.
//!
//! OpenSSH (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"): a line starting with `@revoked` holds a key that
//! "is revoked and must not ever be accepted". As `ssh` applies it, the revocation holds for the hosts the
//! line's patterns match (checked here against OpenSSH 9.2: a key revoked for `other.example` only is
//! still accepted for this host), so this follows `ssh`: comma-separated patterns with `*` and `?`,
//! `!pattern` excluding a host, a hashed `|1|salt|hash` name, and `[host]:port` for a port other than 22.
//! A revocation wins over every other line, and is checked before a new key is learnt.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The first line (1-based, counting every line of the file) of `text` that revokes the key whose
/// OpenSSH base64 blob is `key_blob` for `host` on `port`.
pub fn revoked_line(text: &str, host: &str, port: u16, key_blob: &str) -> Option<usize> {
    let host = host.to_ascii_lowercase();
    let name = if port == 22 { host } else { format!("[{host}]:{port}") };
    text.lines().enumerate().find_map(|(i, line)| {
        let mut fields = line.split_ascii_whitespace();
        if fields.next() != Some("@revoked") {
            return None;
        }
        let (Some(patterns), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next()) else {
            return None;
        };
        (blob == key_blob && host_matches(patterns, &name)).then_some(i + 1)
    })
}

/// Whether a known_hosts host field names `name` (`host` or `[host]:port`), as OpenSSH matches one.
fn host_matches(field: &str, name: &str) -> bool {
    if field.starts_with("|1|") {
        return hashed_matches(field, name);
    }
    let mut positive = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        if glob_matches(name.as_bytes(), pattern.to_ascii_lowercase().as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` any one.
pub(crate) fn glob_matches(s: &[u8], p: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_matches(&s[i..], rest)),
        Some((b'?', rest)) => !s.is_empty() && glob_matches(&s[1..], rest),
        Some((c, rest)) => s.first() == Some(c) && glob_matches(&s[1..], rest),
    }
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, as `ssh-keygen -H` and `HashKnownHosts` write it.
fn hashed_matches(field: &str, name: &str) -> bool {
    let mut parts = field.split('|').skip(2);
    let engine = base64::engine::general_purpose::STANDARD;
    let (Some(Ok(salt)), Some(Ok(hash))) =
        (parts.next().map(|p| engine.decode(p)), parts.next().map(|p| engine.decode(p)))
    else {
        return false;
    };
    hmac_sha1(&salt, name.as_bytes()).as_slice() == hash.as_slice()
}

/// HMAC-SHA1 (RFC 2104): the only use of SHA-1 here is matching names OpenSSH hashed with it.
fn hmac_sha1(key: &[u8], message: &[u8]) -> [u8; 20] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..20].copy_from_slice(&Sha1::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha1::new().chain_update(pad(0x36)).chain_update(message).finalize();
    let outer = Sha1::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    let mut out = [0u8; 20];
    out.copy_from_slice(&outer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIKBcbaDzjbMFGPzdebaJeAWXrpT7EBEg/KjgmZ/1QEat";

    #[test]
    fn hmac_sha1_is_rfc_2202() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(hex(&hmac_sha1(&[0x0b; 20], b"Hi There")), "b617318655057264e28bc0b6fb378c8ef146be00");
        assert_eq!(
            hex(&hmac_sha1(&[0xaa; 80], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "aa4ae5e15272d00e95705637ce8a3b55ed402112"
        );
    }

    #[test]
    fn revoked_lines_match_as_openssh_matches_them() {
        let line = |text: &str| revoked_line(text, "127.0.0.1", 2222, KEY);
        assert_eq!(line(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n@revoked * ssh-ed25519 {KEY}\n")), Some(2));
        assert_eq!(line(&format!("# c\n\n@revoked\t[127.0.0.1]:2222\tssh-ed25519\t{KEY} comment\n")), Some(3));
        assert_eq!(line(&format!("@revoked [127.0.0.?]:22?2,x ssh-ed25519 {KEY}\n")), Some(1));
        // Another key, another host, this host excluded, no marker, or a marker it does not know.
        assert_eq!(line(&format!("@revoked * ssh-ed25519 {}\n", KEY.replace('A', "B"))), None);
        assert_eq!(line(&format!("@revoked other.example ssh-ed25519 {KEY}\n")), None);
        assert_eq!(line(&format!("@revoked 127.0.0.1 ssh-ed25519 {KEY}\n")), None, "port 2222 is `[host]:port`");
        assert_eq!(line(&format!("@revoked *,![127.0.0.1]:2222 ssh-ed25519 {KEY}\n")), None);
        assert_eq!(line(&format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n")), None);
        assert_eq!(line(&format!("@cert-authority * ssh-ed25519 {KEY}\n@revoked *\n")), None);
        // On port 22 the name is the host alone; case does not matter.
        assert_eq!(revoked_line(&format!("@revoked GPU-01 ssh-ed25519 {KEY}\n"), "gpu-01", 22, KEY), Some(1));
    }

    #[test]
    fn hashed_names_match() {
        // `ssh-keygen -H` of `[127.0.0.1]:2222 …`, made with OpenSSH 9.2.
        let hashed = "|1|n3kbY2zopHVaVZWvXrw/vyye8Ng=|mo9JNElOmwcOt69jkQI9YMxdsEE=";
        assert!(hashed_matches(hashed, "[127.0.0.1]:2222"));
        assert!(!hashed_matches(hashed, "[127.0.0.1]:2223"));
        assert!(!hashed_matches("|1|not base64|x", "[127.0.0.1]:2222"));
        let text = format!("@revoked {hashed} ssh-ed25519 {KEY}\n");
        assert_eq!(revoked_line(&text, "127.0.0.1", 2222, KEY), Some(1));
    }
}
