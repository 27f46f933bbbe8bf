//! Jump hosts as a lab and OpenSSH write them: `[user@]host[:port]`, several joined by commas in the order
//! they are passed through (`login.lab,bai@gw:2222`), `[v6]:port` for an IPv6 address, an optional `ssh://`
//! in front (OpenSSH's `-J` takes both forms), or `none` for no jump at all (a node going direct under a
//! cluster whose nodes jump). Pure: the lab's `ssh jump=` and ssh_config's `ProxyJump` both read through
//! [`parse_jumps`], so the two accept exactly the same text.

use std::fmt;

/// Hops in one value at most: the chain is walked one SSH handshake per hop inside the connect timeout,
/// and OpenSSH itself gives up on deeper chains.
pub const MAX_HOPS: usize = 8;

/// One hop of a jump chain, as written; unset parts are filled in when bai connects (ssh_config, the
/// node's user, port 22).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JumpHost {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl fmt::Display for JumpHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (_, None) => write!(f, "{}", self.host),
        }
    }
}

/// Why a jump value does not parse; the caller puts it at the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpError {
    pub message: String,
}

pub const JUMP_HELP: &str = "write `[user@]host[:port]`, several joined by commas in the order they are passed \
     through (`login.lab,bai@gw:2222`), `[addr]:port` for an IPv6 address, or `none` to connect directly";

fn err(message: impl Into<String>) -> JumpError {
    JumpError { message: message.into() }
}

/// The hops of `text`, first hop first; empty for `none`.
pub fn parse_jumps(text: &str) -> Result<Vec<JumpHost>, JumpError> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    if trimmed.is_empty() {
        return Err(err("empty jump host list"));
    }
    let hops = trimmed.split(',').map(|hop| parse_hop(hop.trim())).collect::<Result<Vec<_>, _>>()?;
    if hops.len() > MAX_HOPS {
        return Err(err(format!("{} jump hosts; at most {MAX_HOPS} are passed through", hops.len())));
    }
    Ok(hops)
}

fn parse_hop(hop: &str) -> Result<JumpHost, JumpError> {
    if hop.is_empty() {
        return Err(err("an empty jump host between commas"));
    }
    if hop.eq_ignore_ascii_case("none") {
        return Err(err("`none` stands alone: it means no jump host at all"));
    }
    let rest = hop.strip_prefix("ssh://").unwrap_or(hop);
    let (user, rest) = match rest.rsplit_once('@') {
        Some((user, rest)) => {
            if user.is_empty() || !user.chars().all(|c| c.is_ascii_graphic() && !"@:/[]".contains(c)) {
                return Err(err(format!("`{user}` in `{hop}` is not a user name")));
            }
            (Some(user.to_string()), rest)
        }
        None => (None, rest),
    };
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let Some((address, after)) = inner.split_once(']') else {
            return Err(err(format!("`{hop}` opens `[` without closing it")));
        };
        // An address, then an optional zone (`%eth0`).
        let (digits, zone) = address.split_once('%').unwrap_or((address, "a"));
        let zone_ok = !zone.is_empty() && zone.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit() || ".:".contains(c)) || !zone_ok {
            return Err(err(format!("`{address}` in `{hop}` is not an IPv6 address")));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| err(format!("`{hop}`: `:port` must follow `]`")))?),
        };
        (address, port)
    } else {
        if rest.matches(':').count() > 1 {
            return Err(err(format!("`{hop}`: write an IPv6 address in brackets, `[addr]:port`")));
        }
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        // Host names, IPv4 addresses and names a bastion resolves for itself: letters, digits, `.`, `-`, `_`.
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c)) {
            return Err(err(format!("`{host}` in `{hop}` is not a host name or address")));
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(err(format!("`{text}` in `{hop}` is not a port (1 to 65535)"))),
        },
    };
    Ok(JumpHost { user, host: host.to_string(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(user: Option<&str>, host: &str, port: Option<u16>) -> JumpHost {
        JumpHost { user: user.map(str::to_string), host: host.to_string(), port }
    }

    #[test]
    fn hops_parse_in_every_form_openssh_takes() {
        assert_eq!(parse_jumps("login.lab"), Ok(vec![hop(None, "login.lab", None)]));
        assert_eq!(
            parse_jumps("bai@login.lab:2222, gw , ssh://me@10.0.0.1:22"),
            Ok(vec![
                hop(Some("bai"), "login.lab", Some(2222)),
                hop(None, "gw", None),
                hop(Some("me"), "10.0.0.1", Some(22))
            ])
        );
        assert_eq!(parse_jumps("[fe80::1%eth0]:2200"), Ok(vec![hop(None, "fe80::1%eth0", Some(2200))]));
        assert_eq!(parse_jumps("u@[::1]"), Ok(vec![hop(Some("u"), "::1", None)]));
        assert_eq!(parse_jumps("none"), Ok(vec![]));
        assert_eq!(parse_jumps(" NONE "), Ok(vec![]));
    }

    #[test]
    fn hops_print_as_written() {
        for text in ["login.lab", "bai@login.lab:2222", "[::1]:22", "u@gw"] {
            assert_eq!(parse_jumps(text).expect("parses")[0].to_string(), text);
        }
    }

    #[test]
    fn malformed_hops_say_what_is_wrong() {
        let message = |text: &str| parse_jumps(text).expect_err(text).message;
        assert_eq!(message(""), "empty jump host list");
        assert_eq!(message("a,,b"), "an empty jump host between commas");
        assert_eq!(message("a,none"), "`none` stands alone: it means no jump host at all");
        assert_eq!(message("@gw"), "`` in `@gw` is not a user name");
        assert_eq!(message("gw:0"), "`0` in `gw:0` is not a port (1 to 65535)");
        assert_eq!(message("gw:99999"), "`99999` in `gw:99999` is not a port (1 to 65535)");
        assert_eq!(message("gw:ssh"), "`ssh` in `gw:ssh` is not a port (1 to 65535)");
        assert_eq!(message("login lab"), "`login lab` in `login lab` is not a host name or address");
        assert_eq!(message("a;rm -rf"), "`a;rm -rf` in `a;rm -rf` is not a host name or address");
        assert_eq!(message("[::1"), "`[::1` opens `[` without closing it");
        assert_eq!(message("[::1]22"), "`[::1]22`: `:port` must follow `]`");
        assert_eq!(message("::1"), "`::1`: write an IPv6 address in brackets, `[addr]:port`");
        assert_eq!(message("gw:"), "`` in `gw:` is not a port (1 to 65535)");
        assert_eq!(message("a,b,c,d,e,f,g,h,i"), "9 jump hosts; at most 8 are passed through");
    }
}
