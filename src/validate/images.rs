//! Image rules: a `ref` is a reference in Docker's grammar ([`crate::reference`]). The agent puts it into
//! the engine's API paths, so a reference such as `../../containers/x/json?x=` would address another
//! endpoint: it is refused here, where it was written, and again by the agent.

use crate::diagnostic::{Code, Problem};
use crate::model::Cluster;

pub fn check(cluster: &Cluster, problems: &mut Vec<Problem>) {
    for image in &cluster.images {
        let reference = &image.reference;
        // A missing `ref` is reported where it is missing.
        if reference.loc.is_nowhere() {
            continue;
        }
        if let Err(reason) = crate::reference::check(&reference.value) {
            let shown = reference.value.escape_debug();
            problems.push(
                Problem::error(
                    Code::InvalidRef,
                    format!("image `{}`: `{shown}` is not an image reference", image.name.value),
                )
                .primary(reference.loc, reason)
                .help(
                    "write `[registry[:port]/]path[:tag][@digest]` as Docker does: lowercase path \
                     components of letters and digits joined by `.`, `_`, `__` or `-`, \
                     e.g. `cr.backend.ai/stable/python-pytorch:2.3`",
                ),
            );
        }
    }
}
