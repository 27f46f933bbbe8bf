//! ssh_config's lines as OpenSSH reads them: a keyword (any case), then whitespace or one `=`, then its
//! arguments, which may be double-quoted; `#` starts a comment where a line or an unquoted argument
//! starts. Values are checked as they are read (a `Port` that is no port, a `ProxyJump` that does not
//! parse): OpenSSH refuses such a file whole, and so does bai.

use std::sync::Arc;
use std::time::Duration;

use super::{Directive, Guard, Origin, PATH_TOKENS, Proxy, Setting, SshConfig, SshConfigError, StrictHostKeyChecking};

/// How deep `Include` may nest, as OpenSSH's `READCONF_MAX_DEPTH`.
const MAX_DEPTH: usize = 16;

/// Reads the files an `Include` argument names: `(display name, text)` for each, in order; none when
/// nothing matches (not an error, as in OpenSSH).
pub type IncludeReader<'a> = dyn FnMut(&str) -> Result<Vec<(String, String)>, String> + 'a;

/// Parses `text`, read from `file` (a name for messages); `include` reads what an `Include` names.
pub fn parse(file: &str, text: &str, include: &mut IncludeReader<'_>) -> Result<SshConfig, SshConfigError> {
    let mut directives = Vec::new();
    parse_into(file, text, &[], 0, include, &mut directives)?;
    Ok(SshConfig { directives })
}

fn parse_into(
    file: &str,
    text: &str,
    outer: &[Arc<Guard>],
    depth: usize,
    include: &mut IncludeReader<'_>,
    out: &mut Vec<Directive>,
) -> Result<(), SshConfigError> {
    // Options before the first `Host` apply to every host (only the blocks around an `Include` do).
    let mut guards: Vec<Arc<Guard>> = outer.to_vec();
    for (index, line) in text.lines().enumerate() {
        let origin = Origin { file: file.to_string(), line: index + 1 };
        let fail = |message: String| SshConfigError { file: file.to_string(), line: Some(index + 1), message };
        let Some((keyword, rest)) = split_keyword(line) else { continue };
        let keyword = keyword.to_ascii_lowercase();
        // ProxyCommand takes the rest of the line as it is: it is a shell line.
        if keyword == "proxycommand" {
            let command = rest.trim();
            if command.is_empty() {
                return Err(fail("`ProxyCommand` needs a command or `none`".into()));
            }
            let proxy = if command.eq_ignore_ascii_case("none") {
                Proxy::Jump(Vec::new())
            } else {
                Proxy::Command(command.into())
            };
            out.push(Directive { guards: guards.clone(), setting: Setting::Proxy(proxy), origin });
            continue;
        }
        let args = split_args(rest).map_err(fail)?;
        let one = |what: &str| -> Result<String, SshConfigError> {
            match args.as_slice() {
                [arg] => Ok(arg.clone()),
                [] => Err(fail(format!("`{what}` needs a value"))),
                _ => Err(fail(format!("`{what}` takes one value, found {}", args.len()))),
            }
        };
        let setting = match keyword.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(fail("`Host` needs at least one pattern".into()));
                }
                let patterns = args
                    .iter()
                    .map(|a| match a.strip_prefix('!') {
                        Some(p) => (true, p.to_ascii_lowercase()),
                        None => (false, a.to_ascii_lowercase()),
                    })
                    .collect();
                guards = outer.to_vec();
                guards.push(Arc::new(Guard::Host(patterns)));
                continue;
            }
            "match" => {
                let all = args.len() == 1 && args[0].eq_ignore_ascii_case("all");
                guards = outer.to_vec();
                guards.push(Arc::new(if all { Guard::Always } else { Guard::Never }));
                continue;
            }
            "include" => {
                if args.is_empty() {
                    return Err(fail("`Include` needs a file".into()));
                }
                if depth >= MAX_DEPTH {
                    return Err(fail(format!("`Include` nested more than {MAX_DEPTH} deep")));
                }
                for pattern in &args {
                    for (name, text) in include(pattern).map_err(&fail)? {
                        parse_into(&name, &text, &guards, depth + 1, include, out)?;
                    }
                }
                continue;
            }
            "hostname" => {
                let name = one("HostName")?;
                check_tokens(&name, "%h").map_err(fail)?;
                Setting::HostName(name)
            }
            "user" => Setting::User(one("User")?),
            "port" => {
                let text = one("Port")?;
                match text.parse::<u16>() {
                    Ok(port) if port > 0 => Setting::Port(port),
                    _ => return Err(fail(format!("`Port {text}` is not a port (1 to 65535)"))),
                }
            }
            "identityfile" => {
                let path = one("IdentityFile")?;
                check_tokens(&path, PATH_TOKENS).map_err(fail)?;
                // `IdentityFile none` names no file: the keys of ssh-agent and the defaults are used.
                if path.eq_ignore_ascii_case("none") {
                    continue;
                }
                Setting::IdentityFile(path)
            }
            "userknownhostsfile" => {
                // Several files may be given; bai checks and records host keys in the first.
                let Some(path) = args.first() else {
                    return Err(fail("`UserKnownHostsFile` needs a file".into()));
                };
                check_tokens(path, PATH_TOKENS).map_err(fail)?;
                // `none` would mean "no file": bai always checks against one, so it keeps its default.
                if path.eq_ignore_ascii_case("none") {
                    continue;
                }
                Setting::UserKnownHostsFile(path.clone())
            }
            "proxyjump" => {
                let text = one("ProxyJump")?;
                let hops =
                    crate::jump::parse_jumps(&text).map_err(|e| fail(format!("`ProxyJump {text}`: {}", e.message)))?;
                Setting::Proxy(Proxy::Jump(hops))
            }
            "stricthostkeychecking" => {
                let text = one("StrictHostKeyChecking")?;
                Setting::StrictHostKeyChecking(match text.to_ascii_lowercase().as_str() {
                    "yes" | "true" => StrictHostKeyChecking::Yes,
                    "ask" => StrictHostKeyChecking::Ask,
                    "accept-new" => StrictHostKeyChecking::AcceptNew,
                    "no" | "off" | "false" => StrictHostKeyChecking::No,
                    _ => return Err(fail(format!("`StrictHostKeyChecking {text}`: write yes, no, ask or accept-new"))),
                })
            }
            "connecttimeout" => {
                let text = one("ConnectTimeout")?;
                if text.eq_ignore_ascii_case("none") {
                    continue;
                }
                match time(&text) {
                    Some(d) if !d.is_zero() => Setting::ConnectTimeout(d),
                    _ => return Err(fail(format!("`ConnectTimeout {text}` is not a time (`10`, `10s`, `1m`)"))),
                }
            }
            "serveraliveinterval" => {
                let text = one("ServerAliveInterval")?;
                match time(&text) {
                    Some(d) => Setting::ServerAliveInterval(d),
                    None => return Err(fail(format!("`ServerAliveInterval {text}` is not a time (`15`, `15s`)"))),
                }
            }
            "serveralivecountmax" => {
                let text = one("ServerAliveCountMax")?;
                match text.parse::<usize>() {
                    Ok(n) => Setting::ServerAliveCountMax(n),
                    Err(_) => return Err(fail(format!("`ServerAliveCountMax {text}` is not a count"))),
                }
            }
            "compression" => {
                let text = one("Compression")?;
                match text.to_ascii_lowercase().as_str() {
                    "yes" | "true" => Setting::Compression(true),
                    "no" | "false" => Setting::Compression(false),
                    _ => return Err(fail(format!("`Compression {text}`: write yes or no"))),
                }
            }
            // Everything else (Ciphers, ForwardAgent, SendEnv, …) does not change how bai connects.
            _ => continue,
        };
        out.push(Directive { guards: guards.clone(), setting, origin });
    }
    Ok(())
}

/// The keyword and the rest of the line, or `None` for a blank or comment line.
fn split_keyword(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').map_or(rest, str::trim_start);
    Some((keyword, rest))
}

/// Whitespace-separated arguments; `"…"` keeps spaces (`\"` and `\\` inside), an unquoted `#` at the start
/// of an argument ends the line.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        if first == '#' {
            break;
        }
        let mut arg = String::new();
        if first == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => arg.push(c),
                        Some(c) => {
                            arg.push('\\');
                            arg.push(c);
                        }
                        None => return Err("a quoted value is not closed".into()),
                    },
                    Some(c) => arg.push(c),
                    None => return Err("a quoted value is not closed".into()),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                arg.push(c);
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// Refuses a `%` token outside `allowed` (`"%dh"`): OpenSSH stops on one, and a path with a token left in
/// it would name the wrong file.
fn check_tokens(text: &str, allowed: &str) -> Result<(), String> {
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => {}
                Some(t) if allowed[1..].contains(t) => {}
                Some(t) => return Err(format!("`%{t}` in `{text}` is a token bai does not expand here")),
                None => return Err(format!("`{text}` ends with a lone `%`")),
            }
        }
    }
    Ok(())
}

/// OpenSSH's time format: seconds as a bare number, or a sum of numbers with `s`, `m`, `h`, `d`, `w`.
fn time(text: &str) -> Option<Duration> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = std::mem::take(&mut number).parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
    }
    if !number.is_empty() {
        total = total.checked_add(number.parse::<u64>().ok()?)?;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_and_arguments_split_as_openssh_splits_them() {
        assert_eq!(split_keyword("  Port=2222"), Some(("Port", "2222")));
        assert_eq!(split_keyword("Port = 2222"), Some(("Port", "2222")));
        assert_eq!(split_keyword("\tHostName\t10.0.0.1 "), Some(("HostName", "10.0.0.1")));
        assert_eq!(split_keyword("# comment"), None);
        assert_eq!(split_keyword("   "), None);
        assert_eq!(
            split_args(r#"a "b c" "d\"e" f # tail"#),
            Ok(vec!["a".into(), "b c".into(), "d\"e".into(), "f".into()])
        );
        assert!(split_args(r#""open"#).is_err());
    }

    #[test]
    fn times_read_as_openssh_reads_them() {
        assert_eq!(time("10"), Some(Duration::from_secs(10)));
        assert_eq!(time("10s"), Some(Duration::from_secs(10)));
        assert_eq!(time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(time("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(time("ten"), None);
        assert_eq!(time("5x"), None);
    }

    #[test]
    fn only_known_tokens_pass() {
        assert!(check_tokens("%d/.ssh/id_%h%%", PATH_TOKENS).is_ok());
        assert!(check_tokens("%C", PATH_TOKENS).is_err());
        assert!(check_tokens("100%", PATH_TOKENS).is_err());
        assert!(check_tokens("%h.lab", "%h").is_ok());
        assert!(check_tokens("%d", "%h").is_err());
    }
}
