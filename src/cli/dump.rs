//! `strongroom dump`

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::Ctx;
use strongroom_core::snapshot::Pick;

/// Arguments of `dump`.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot: an id, a unique prefix, or `latest`
    snapshot: String,
    /// File in the snapshot
    path: String,
    /// With `latest`: the newest snapshot at or before this time
    #[arg(long)]
    at: Option<String>,
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

pub fn run(ctx: &Ctx, a: DumpArgs) -> Result<ExitCode> {
    let at = a.at.as_deref().map(strongroom_core::snapshot::parse_time).transpose()?;
    let repo = ctx.open()?;
    let filter = a.filter.filter();
    let snap = repo.resolve(&a.snapshot, at, &Pick { filter: &filter, named: Some(&a.path) })?;
    // The read's audit entry (written at the end, with the outcome).
    ctx.note_audit(vec![snap.id.to_hex()], 0);
    ctx.note_audit_paths(vec![a.path.clone()]);
    let result = write_file(ctx, &repo, &snap, &a.path);
    if let Ok(n) = &result {
        ctx.note_audit_bytes(*n);
    }
    ctx.audit(&repo, "dump", &result)?;
    result.map(|_| ExitCode::SUCCESS)
}

/// Writes the file to stdout; returns the bytes written.
fn write_file(
    ctx: &Ctx,
    repo: &strongroom_core::repo::Repo,
    snap: &strongroom_core::snapshot::Snapshot,
    path: &str,
) -> Result<u64> {
    let node = ctx
        .rt
        .block_on(repo.find(&snap.record.tree, path, &snap.id))?
        .with_context(|| format!("{path} is a directory; dump writes one file"))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    match ctx.rt.block_on(strongroom_core::restore::dump(repo, &node, &mut out)) {
        Ok(n) => Ok(n),
        // A reader that went away (`dump … | head`) is not an error.
        Err(strongroom_core::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(e.into()),
    }
}
