//! `strongroom snapshots`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};
use crate::snapshot::Snapshot;

/// Arguments of `snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots with this tag (repeatable: any of them)
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only snapshots of this host
    #[arg(long)]
    host: Option<String>,
}

/// The JSON shape of one snapshot (documented in docs/GUIDE.md).
#[derive(serde::Serialize)]
pub struct SnapshotJson<'a> {
    id: String,
    short_id: String,
    time: &'a str,
    tenant: &'a str,
    host: &'a str,
    username: &'a str,
    paths: &'a [String],
    tags: &'a [String],
    parent: Option<&'a str>,
    tree: String,
    summary: &'a crate::format::snapshot::SnapshotSummary,
}

/// Converts a snapshot to its JSON shape.
pub fn to_json<'a>(s: &'a Snapshot, tenant: &'a str) -> SnapshotJson<'a> {
    SnapshotJson {
        id: s.id.to_hex(),
        short_id: s.id.short(),
        time: &s.record.time,
        tenant,
        host: &s.record.hostname,
        username: &s.record.username,
        paths: &s.record.paths,
        tags: &s.record.tags,
        parent: s.record.parent.as_deref(),
        tree: s.record.tree.to_hex(),
        summary: &s.record.summary,
    }
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    let snaps: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| a.tags.is_empty() || s.record.tags.iter().any(|t| a.tags.contains(t)))
        .filter(|s| a.host.as_ref().is_none_or(|h| &s.record.hostname == h))
        .collect();
    let tenant = repo.tenant().to_string();
    if ctx.global.json {
        let v: Vec<_> = snaps.iter().map(|s| to_json(s, &tenant)).collect();
        return ctx.print_json(&v).map(|()| ExitCode::SUCCESS);
    }
    out!("{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  paths", "id", "time", "host", "tags", "size");
    for s in &snaps {
        let time = s
            .record
            .time
            .parse::<jiff::Timestamp>()
            .map(|t| t.to_zoned(jiff::tz::TimeZone::system()).strftime("%Y-%m-%d %H:%M:%S").to_string());
        out!(
            "{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  {}",
            s.id.short(),
            time.unwrap_or_else(|_| s.record.time.clone()),
            s.record.hostname,
            s.record.tags.join(","),
            bytes(s.record.summary.logical_bytes),
            s.record.paths.join(" ")
        );
    }
    out!("{} snapshots", snaps.len());
    Ok(ExitCode::SUCCESS)
}
