//! Validation: every rule of the language, all problems of a lab in one run.
//!
//! Each family of rules lives in its own file and appends to one list; none stops the others, so a user
//! fixes a file in one round. References are resolved against each cluster's first definition of a name
//! (a duplicate is reported once, by [`names`], and does not cascade).

mod capacity;
mod cycles;
mod gpus;
mod images;
mod index;
mod mounts;
mod names;
mod ports;
mod references;

pub use capacity::check_inventory;
pub use index::ClusterIndex;
pub use names::{is_plain_name, is_session_name, is_vfolder_name};

use crate::diagnostic::Problem;
use crate::model::Config;

/// Every problem in `config`, unsorted (callers sort with [`crate::diagnostic::sort_problems`]).
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    names::check_clusters(config, &mut problems);
    for cluster in &config.clusters {
        let index = ClusterIndex::new(cluster);
        names::check(cluster, &mut problems);
        images::check(cluster, &mut problems);
        references::check(cluster, &index, &mut problems);
        mounts::check(cluster, &index, &mut problems);
        capacity::check(cluster, &index, &mut problems);
        gpus::check(cluster, &index, &mut problems);
        ports::check(cluster, &mut problems);
        cycles::check(cluster, &index, &mut problems);
    }
    problems
}
