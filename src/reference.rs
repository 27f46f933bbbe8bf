//! Image references, as Docker reads them: the grammar of `distribution/reference`, and the one safe way
//! to put a reference into a Docker API path.
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [ domain "/" ] path-component ( "/" path-component )*
//! domain           := host [ ":" port ]          host: domain-name | IPv4 | "[" IPv6 "]"
//! domain-component := [A-Za-z0-9] | [A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]
//! path-component   := [a-z0-9]+ ( separator [a-z0-9]+ )*      separator: "." | "_" | "__" | "-"+
//! tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest           := algorithm ":" [0-9a-fA-F]{32,}
//! algorithm        := [A-Za-z][A-Za-z0-9]* ( [+._-] [A-Za-z][A-Za-z0-9]* )*
//! ```
//!
//! The first component of a name is its domain when it holds a `.` or a `:`, is `localhost`, or has an
//! upper-case letter (Docker's own rule for telling `registry.example/img` from `team/img`). A name is at
//! most 255 characters, and a path of 64 hex digits alone is refused (it reads as an image id).
//!
//! Why it matters: the engine's API takes a reference in its URL path (`/images/{name}/json`), and a
//! reference such as `../../containers/X/json?x=` addresses another endpoint entirely. The lab's `ref`
//! is checked at validation ([`check`]); the agent checks again and percent-encodes the reference into one
//! path segment ([`path_segment`]) wherever it reaches an API path.

/// Longest name (domain and path, without tag or digest) Docker accepts.
const NAME_MAX: usize = 255;

/// Why a string is not an image reference; words for "`ref` …: {reason}".
pub fn check(reference: &str) -> Result<(), String> {
    if reference.is_empty() {
        return Err("a reference cannot be empty".into());
    }
    if let Some(c) = reference.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("it holds {}, which no reference may", describe(c)));
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    // A tag follows the last `:` that comes after the last `/` (a `:` before it is a registry's port).
    let name_start = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[name_start..].rfind(':') {
        Some(i) => (&rest[..name_start + i], Some(&rest[name_start + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(tag)?;
    }
    check_name(name)
}

/// `reference` percent-encoded into one URL path segment: every byte but `A-Z a-z 0-9 - . _ ~` escaped,
/// `/` included, so that nothing in it can start another segment, a query or a fragment. Docker decodes
/// the segment back before routing (`/images/lab%2Fbox%3A1/json` is image `lab/box:1`). Use it on
/// references that passed [`check`]: `.` and `..` are left as they are (and are not references).
pub fn path_segment(reference: &str) -> String {
    let mut out = String::with_capacity(reference.len());
    for b in reference.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn describe(c: char) -> String {
    if c == ' ' { "a space".into() } else { format!("the character `{}`", c.escape_debug()) }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    if name.len() > NAME_MAX {
        return Err(format!("the repository name is longer than {NAME_MAX} characters"));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    let is_domain = components.len() > 1
        && (first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()));
    if is_domain {
        check_domain(first)?;
        components.remove(0);
    }
    for component in &components {
        check_path_component(component)?;
    }
    let path = components.join("/");
    if path.len() == 64 && path.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("a repository name of 64 hex digits reads as an image id".into());
    }
    Ok(())
}

fn check_domain(domain: &str) -> Result<(), String> {
    let bad = || Err(format!("`{domain}` is not a registry host (`host`, `host:port`, `[ipv6]:port`)"));
    let (host, port) = if let Some(inner) = domain.strip_prefix('[') {
        let Some((ipv6, after)) = inner.split_once(']') else { return bad() };
        if ipv6.is_empty() || !ipv6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return bad();
        }
        match after {
            "" => return Ok(()),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(host) = host {
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !host.split('.').all(component_ok) {
            return bad();
        }
    }
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    Ok(())
}

fn check_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("the repository name has an empty path component (`//`, or a `/` at an end)".into());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("`{component}` has an upper-case letter: repository names are lowercase"));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        // One run of [a-z0-9]+ …
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return Err(format!(
                "`{component}` is not a repository path component: lowercase letters and digits, \
                 joined by `.`, `_`, `__` or dashes"
            ));
        }
        if i == bytes.len() {
            return Ok(());
        }
        // … then a separator: `.`, `_`, `__` or `-`+.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => {
                return Err(format!(
                    "`{component}` is not a repository path component: lowercase letters and digits, \
                     joined by `.`, `_`, `__` or dashes"
                ));
            }
        }
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = (1..=128).contains(&tag.len())
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{tag}` is not a tag: 1 to 128 of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`"))
    }
}

fn check_digest(digest: &str) -> Result<(), String> {
    let bad = || Err(format!("`{digest}` is not a digest (`algorithm:hex`, e.g. `sha256:` and 64 hex digits)"));
    let Some((algorithm, hex)) = digest.split_once(':') else { return bad() };
    let component_ok = |c: &str| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && c.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    if !algorithm.split(['+', '.', '-', '_']).all(component_ok) {
        return bad();
    }
    if hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_docker_accepts_pass() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for ok in [
            "ubuntu",
            "ubuntu:24.04",
            "library/ubuntu:latest",
            "cr.backend.ai/stable/python-pytorch:2.3-py312-cuda12.4",
            "localhost/img",
            "localhost:5000/team/img:2",
            "registry.example.com:443/a/b/c",
            "[::1]:5000/img:tag",
            "[fe80::1]/img",
            "my_org/my__img",
            "a-b--c/x.y_z:v1.0-rc_1",
            "Registry.Example/img",
            "bai-it/box:1",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        assert_eq!(check(&format!("cr.io/a/b@{digest}")), Ok(()));
        assert_eq!(check(&format!("cr.io/a/b:1@{digest}")), Ok(()));
        assert_eq!(check(&format!("{}:1", "a".repeat(200))), Ok(()));
    }

    #[test]
    fn hostile_and_malformed_references_fail() {
        for bad in [
            "",
            "../../containers/x/json?x=",
            "../x",
            "a/../b",
            "img?x=1",
            "img#frag",
            "img%2F",
            "Pytorch",
            "team/Img",
            "img:",
            "img:-x",
            "img:.x",
            "img:a/b",
            "/img",
            "img/",
            "a//b",
            "-img",
            "img-",
            "img..x",
            "img___x",
            "img@sha256:abc",
            "img@:abcdef",
            "img with space",
            "img\n",
            "img\0",
            "bad_host:5000/img",
            "host:port/img",
            "[zz]:1/img",
            "[::1]x/img",
            "-host.io/img",
            ".",
            "..",
            "_x",
        ] {
            assert!(check(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check(&"a".repeat(256)).is_err(), "too long");
        assert!(check(&"ab".repeat(32)).is_err(), "an id, not a name");
        assert!(check(&format!("img:{}", "t".repeat(129))).is_err(), "a tag is at most 128 characters");
    }

    #[test]
    fn reasons_name_the_part_at_fault() {
        assert!(check("Pytorch").unwrap_err().contains("lowercase"));
        assert!(check("img:-x").unwrap_err().contains("not a tag"));
        assert!(check("img@md5").unwrap_err().contains("not a digest"));
        assert!(check("img\n").unwrap_err().contains("`\\n`"), "control characters are shown escaped");
    }

    #[test]
    fn a_reference_becomes_one_path_segment() {
        assert_eq!(path_segment("lab/box:1"), "lab%2Fbox%3A1");
        assert_eq!(path_segment("cr.io/a/b@sha256:ab"), "cr.io%2Fa%2Fb%40sha256%3Aab");
        let hostile = path_segment("../../containers/x/json?x=");
        assert!(!hostile.contains(['/', '?', '#']), "{hostile}");
    }
}
