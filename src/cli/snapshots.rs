//! `strongroom snapshots`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};
use strongroom_core::snapshot::Snapshot;

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
    summary: &'a strongroom_core::codec::snapshot::SnapshotSummary,
}

/// The JSON shape of a snapshot record that fails verification: it is
/// listed (it may be any snapshot, the newest included) but nothing of
/// it can be trusted but its name.
#[derive(serde::Serialize)]
struct DamagedJson<'a> {
    id: &'a str,
    short_id: &'a str,
    tenant: &'a str,
    damaged: &'a str,
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
    // Damaged records are listed whatever the filters: their tags and
    // host are unknown.
    let damaged = repo.damaged_snapshot_records()?;
    let tenant = repo.tenant().to_string();
    if ctx.global.json {
        let mut v: Vec<serde_json::Value> =
            snaps.iter().map(|s| serde_json::to_value(to_json(s, &tenant))).collect::<Result<_, _>>()?;
        for d in &damaged {
            let id = d.id_hex();
            let short_id = id.get(..8).unwrap_or(id);
            v.push(serde_json::to_value(DamagedJson { id, short_id, tenant: &tenant, damaged: &d.why })?);
        }
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
    for d in &damaged {
        let id = d.id_hex();
        out!("{:<8}  {:<20}  {}", id.get(..8).unwrap_or(id), "DAMAGED", d.why);
    }
    if damaged.is_empty() {
        out!("{} snapshots", snaps.len());
    } else {
        out!(
            "{} snapshots, {} damaged snapshot records (not restorable; they stop `latest` and prune: see `strongroom repair`)",
            snaps.len(),
            damaged.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
