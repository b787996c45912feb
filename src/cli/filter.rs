//! The snapshot filter flags every command that takes a snapshot
//! reference shares (restic's `--host`, `--path`, `--tag`, plus `--job`).

use clap::Args;
use strongroom_core::group::SnapshotFilter;

/// `--host`, `--path`, `--tag`, `--job`: which snapshots `latest` (and a
/// listing or a policy) looks at.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable: any of them)
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots whose paths include PATH (repeatable: all of them)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// Only snapshots with these tags (repeatable: any of them; 'a,b' needs both; 'safety' lets safety snapshots in)
    #[arg(long = "tag", value_name = "TAGS")]
    tags: Vec<String>,
    /// Only snapshots made by this agent job (repeatable: any of them)
    #[arg(long = "job", value_name = "NAME")]
    jobs: Vec<String>,
}

impl FilterArgs {
    /// The library's filter.
    pub fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            paths: self.paths.clone(),
            tags: self.tags.clone(),
            jobs: self.jobs.clone(),
        }
    }
}
