//! Where a mount lands in a session's container: `/home/work/<alias>` for a relative alias, the alias
//! itself for an absolute one, `/home/work/<vfolder>` without one, normalized so that `data`, `./data/`
//! and `/home/work/data` are one place; or why it may not land there. A property of the model
//! ([`crate::model::Mount::destination`]): validation judges it, the session spec records it.

const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "dev", "etc", "lib", "lib64", "media", "mnt", "opt", "proc", "root", "run", "sbin", "srv", "sys",
    "tmp", "usr", "var",
];

const RESERVED: &[&str] = &[".terminfo", ".jupyter", ".tmux.conf", ".ssh", ".local", ".config", ".linuxbrew"];

/// A normalized mount destination, or why a mount cannot have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Ok(String),
    Empty,
    /// The alias holds a character no destination may: `:` (it splits Docker's `host:destination:ro`
    /// bind syntax) or a control character (NUL, newline, escape sequences).
    Invalid(char),
    Escapes,
    Workdir,
    System(String),
    Reserved(String),
}

/// Where a mount lands in the container, normalized (`/home/work/data`), or why it may not land there.
pub fn destination(vfolder: &str, alias: Option<&str>) -> Destination {
    let written = alias.unwrap_or(vfolder);
    if written.trim().is_empty() {
        return Destination::Empty;
    }
    if let Some(c) = written.chars().find(|c| *c == ':' || c.is_control()) {
        return Destination::Invalid(c);
    }
    let absolute = written.starts_with('/');
    let mut parts: Vec<&str> = if absolute { Vec::new() } else { vec!["home", "work"] };
    for part in written.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                // A relative alias that climbs out of the working directory escapes it. An absolute
                // path is simply normalized (`/../etc` is `/etc`) and judged by where it lands.
                if !absolute && parts.len() <= 2 {
                    return Destination::Escapes;
                }
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    let path = format!("/{}", parts.join("/"));
    match parts.as_slice() {
        [] => Destination::System(path),
        ["home", "work"] => Destination::Workdir,
        ["home", "work", first, ..] if is_reserved(first) => Destination::Reserved((*first).to_string()),
        ["home", "work", ..] => Destination::Ok(path),
        ["home", ..] => Destination::System(path),
        [first, ..] if SYSTEM_DIRS.contains(first) => Destination::System(path),
        _ => Destination::Ok(path),
    }
}

fn is_reserved(name: &str) -> bool {
    if RESERVED.contains(&name) {
        return true;
    }
    // Shell start-up files: `.bashrc`, `.zshrc`, `.bash_profile`, `.profile`-like names.
    let Some(rest) = name.strip_prefix('.') else { return false };
    (rest.len() > 2 && rest.ends_with("rc")) || rest.ends_with("_profile") || rest == "profile"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(path: &str) -> Destination {
        Destination::Ok(path.to_string())
    }

    #[test]
    fn destinations_are_normalized() {
        assert_eq!(destination("d", None), ok("/home/work/d"));
        assert_eq!(destination("d", Some("data")), ok("/home/work/data"));
        assert_eq!(destination("d", Some("./data/")), ok("/home/work/data"));
        assert_eq!(destination("d", Some("/home/work/data")), ok("/home/work/data"));
        assert_eq!(destination("d", Some("a/../b")), ok("/home/work/b"));
        assert_eq!(destination("d", Some("/data")), ok("/data"));
        assert_eq!(destination("d", Some("//data//x")), ok("/data/x"));
    }

    #[test]
    fn forbidden_destinations() {
        assert_eq!(destination("d", Some("")), Destination::Empty);
        assert_eq!(destination("d", Some("  ")), Destination::Empty);
        assert_eq!(destination("d", Some("..")), Destination::Escapes);
        assert_eq!(destination("d", Some("../x")), Destination::Escapes);
        assert_eq!(destination("d", Some("/data/../etc")), Destination::System("/etc".into()));
        assert_eq!(destination("d", Some("/../data")), ok("/data"));
        assert_eq!(destination("d", Some(".")), Destination::Workdir);
        assert_eq!(destination("d", Some("/home/work")), Destination::Workdir);
        assert_eq!(destination("d", Some("/etc")), Destination::System("/etc".into()));
        assert_eq!(destination("d", Some("/usr/local/x")), Destination::System("/usr/local/x".into()));
        assert_eq!(destination("d", Some("/home/other")), Destination::System("/home/other".into()));
        assert_eq!(destination("d", Some("/")), Destination::System("/".into()));
        assert_eq!(destination("d", Some(".ssh")), Destination::Reserved(".ssh".into()));
        assert_eq!(destination("d", Some(".bashrc")), Destination::Reserved(".bashrc".into()));
        assert_eq!(destination("d", Some(".bash_profile")), Destination::Reserved(".bash_profile".into()));
        assert_eq!(destination("d", Some(".local/bin")), Destination::Reserved(".local".into()));
        assert_eq!(destination(".config", None), Destination::Reserved(".config".into()));
        assert_eq!(destination("d", Some(".data")), ok("/home/work/.data"));
    }

    #[test]
    fn aliases_with_a_colon_or_a_control_character_are_refused() {
        // `:` splits Docker's bind syntax (`host:destination:ro`); control characters have no place in a path.
        assert_eq!(destination("d", Some("data:ro")), Destination::Invalid(':'));
        assert_eq!(destination("d", Some("/data:/etc")), Destination::Invalid(':'));
        assert_eq!(destination("d", Some("a\0b")), Destination::Invalid('\0'));
        assert_eq!(destination("d", Some("x\ny")), Destination::Invalid('\n'));
        assert_eq!(destination("d", Some("x\u{1b}[31m")), Destination::Invalid('\u{1b}'));
        assert_eq!(destination("d", Some("x\u{7f}")), Destination::Invalid('\u{7f}'));
        assert_eq!(destination("d", Some("x\u{85}")), Destination::Invalid('\u{85}'));
        assert_eq!(destination("d", Some("données")), ok("/home/work/données"));
    }
}
