//! The lab dashboard that `bai watch --listen` serves at `/`: one self-contained page (dashboard.html,
//! embedded in the binary) that fetches `/status` every two seconds and shows nodes, GPUs and sessions.
//! It loads nothing from anywhere else, so it works on a lab network without internet, and its
//! Content-Security-Policy admits exactly its own inline style and script, by hash.

use std::sync::LazyLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The page, as served.
pub const PAGE: &str = include_str!("dashboard.html");

/// The page's Content-Security-Policy. Hashes rather than `'unsafe-inline'`: should node text ever reach
/// the page as markup despite the script, no injected script or style would run. Trusted Types make the
/// browser itself refuse markup sinks such as `innerHTML`; `connect-src 'self'` lets the script fetch
/// `/status` and nothing else.
pub static POLICY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'",
        hash_source(inline(PAGE, "script")),
        hash_source(inline(PAGE, "style")),
    )
});

/// The text between `<tag>` and `</tag>`: exactly what the browser hashes for the policy.
fn inline<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    page.split_once(open.as_str()).and_then(|(_, rest)| rest.split_once(close.as_str())).map_or("", |(body, _)| body)
}

/// A CSP hash source (`'sha256-…'` without the quotes).
fn hash_source(text: &str) -> String {
    format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of every `name="…"` attribute in the page.
    fn attributes<'a>(page: &'a str, name: &str) -> Vec<&'a str> {
        let needle = format!(" {name}=\"");
        page.match_indices(needle.as_str())
            .filter_map(|(at, _)| page[at + needle.len()..].split_once('"').map(|(value, _)| value))
            .collect()
    }

    #[test]
    fn the_page_references_nothing_outside_this_server() {
        for scheme in ["http:", "https:", "ws:", "wss:", "ftp:", "data:", "url(", "@import"] {
            assert!(!PAGE.contains(scheme), "the page mentions `{scheme}`");
        }
        let links: Vec<&str> = ["href", "src", "action"].iter().flat_map(|name| attributes(PAGE, name)).collect();
        assert!(!links.is_empty(), "the attribute scan found nothing to check");
        for link in links {
            assert!(link.starts_with('/') && !link.starts_with("//"), "`{link}` is not a path on this server");
        }
        let fetches: Vec<&str> = PAGE.match_indices("fetch(").map(|(at, _)| &PAGE[at..at + 16]).collect();
        assert_eq!(fetches, ["fetch(\"/status\","], "the script fetches /status alone");
    }

    #[test]
    fn node_text_never_reaches_a_markup_sink() {
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!PAGE.contains(sink), "the page uses `{sink}`");
        }
    }

    #[test]
    fn the_policy_admits_exactly_the_one_inline_script_and_style() {
        // A second block would be refused by the browser: the hash covers the first one only.
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "one <{tag}> block");
            assert!(!inline(PAGE, tag).trim().is_empty(), "<{tag}> is found");
        }
        assert!(!PAGE.contains(" style=\""), "style attributes are refused by the policy");
        let handlers = PAGE.match_indices(" on").filter(|(at, _)| {
            let name: String = PAGE[at + 3..].chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && PAGE[at + 3 + name.len()..].starts_with('=')
        });
        assert_eq!(handlers.count(), 0, "inline event handlers are refused by the policy");
        let policy = POLICY.as_str();
        assert!(policy.starts_with("default-src 'none'; "), "{policy}");
        assert!(policy.contains(&format!("script-src '{}';", hash_source(inline(PAGE, "script")))), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
    }

    #[test]
    fn a_hash_source_is_the_base64_sha256_of_the_text() {
        // The value from the CSP specification's own example of `alert('Hello, world.');`.
        assert_eq!(hash_source("alert('Hello, world.');"), "sha256-qznLcsROx4GACP2dm0UCKCzCG+HiZ1guq6ZZDob/Tng=");
    }
}
