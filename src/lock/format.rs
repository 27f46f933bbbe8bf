//! Writing a lock file: one canonical text per lock (clusters and images sorted by name, fixed property
//! order, four-space indent), so that locking again with nothing new gives the same bytes and a change
//! shows in review as the lines that moved.

use std::fmt::Write;

use crate::lock::{Lock, LockedSource, VERSION};

const HEADER: &str = "// bai.lock: written by `bai lock` and `bai apply`; commit it beside the lab.\n\
// Pulled images are pulled at `digest`, built ones must come from `context-sha256`, archives must hash to\n\
// `sha256` and load as `image-id`; `bai apply --update-lock` moves entries forward.\n";

/// The lock file's text.
pub fn format(lock: &Lock) -> String {
    let mut out = String::from(HEADER);
    let _ = writeln!(out, "version {VERSION}");
    if let Some(agent) = &lock.agent {
        let _ = writeln!(out, "agent sha256={}", quote(agent));
    }
    for (cluster, images) in &lock.clusters {
        if images.is_empty() {
            let _ = writeln!(out, "cluster {}", quote(cluster));
            continue;
        }
        let _ = writeln!(out, "cluster {} {{", quote(cluster));
        for (name, image) in images {
            let _ = write!(out, "    image {} {} ref={}", quote(name), image.source.kind(), quote(&image.reference));
            let mut prop = |key: &str, value: &Option<String>| {
                if let Some(v) = value {
                    let _ = write!(out, " {key}={}", quote(v));
                }
            };
            match &image.source {
                LockedSource::Pull { digest } => prop("digest", digest),
                LockedSource::Build { context_sha256, dockerfile, image_id } => {
                    prop("context-sha256", &Some(context_sha256.clone()));
                    prop("dockerfile", &Some(dockerfile.clone()));
                    prop("image-id", image_id);
                }
                LockedSource::Archive { sha256, image_id } => {
                    prop("sha256", &Some(sha256.clone()));
                    prop("image-id", image_id);
                }
            }
            out.push('\n');
        }
        out.push_str("}\n");
    }
    out
}

/// A KDL v2 quoted string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::parse::parse;
    use crate::source::FileId;

    #[test]
    fn the_text_is_canonical_and_reads_back() {
        let lock = crate::lock::tests::sample();
        let text = format(&lock);
        let (h, d) = (crate::lock::tests::h, crate::lock::tests::d);
        assert_eq!(
            text.lines().skip(3).collect::<Vec<_>>().join("\n"),
            format!(
                "version 1\n\
                 agent sha256=\"{}\"\n\
                 cluster \"lab\" {{\n    \
                 image \"offline\" archive ref=\"lab/offline:1\" sha256=\"{}\"\n    \
                 image \"pytorch\" pull ref=\"cr.backend.ai/stable/python-pytorch:2.3\" digest=\"{}\"\n    \
                 image \"tools\" build ref=\"lab/tools:1\" context-sha256=\"{}\" dockerfile=\"Dockerfile\" image-id=\"{}\"\n\
                 }}",
                h('9'),
                h('e'),
                d('a'),
                h('c'),
                d('b')
            )
        );
        let back = parse(&text, FileId(0)).expect("reads back");
        assert_eq!(back, lock);
        assert_eq!(format(&back), text, "formatting again gives the same bytes");
    }

    #[test]
    fn odd_strings_survive() {
        let mut lock = crate::lock::tests::sample();
        let images = lock.clusters.remove("lab").unwrap_or_default();
        lock.clusters.insert("we\"ird\\ \u{1}name".into(), images);
        let text = format(&lock);
        assert_eq!(parse(&text, FileId(0)).expect("reads back"), lock);
    }
}
