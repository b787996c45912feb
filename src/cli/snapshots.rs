//! `strongroom snapshots`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::{bytes, Ctx};
use strongroom_core::group::{GroupBy, GroupKey};
use strongroom_core::snapshot::Snapshot;

/// Arguments of `snapshots`.
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Which snapshots to list
    #[command(flatten)]
    filter: super::filter::FilterArgs,
    /// List by group: host, paths, tags, job (comma-separated, as restic's --group-by)
    #[arg(long, value_name = "FIELDS", value_parser = parse_group_by)]
    group_by: Option<GroupBy>,
}

fn parse_group_by(s: &str) -> std::result::Result<GroupBy, String> {
    s.parse().map_err(|e: strongroom_core::Error| e.to_string())
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
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a str>,
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
        job: s.record.job.as_deref(),
        parent: s.record.parent.as_deref(),
        tree: s.record.tree.to_hex(),
        summary: &s.record.summary,
    }
}

pub fn run(ctx: &Ctx, a: SnapshotsArgs) -> Result<ExitCode> {
    let repo = ctx.open_for_snapshots()?;
    let filter = a.filter.filter();
    let snaps: Vec<Snapshot> = repo.snapshots()?.into_iter().filter(|s| filter.matches(&s.record)).collect();
    // Damaged records are listed whatever the filters: their tags and
    // host are unknown.
    let damaged = repo.damaged_snapshot_records()?;
    let tenant = repo.tenant().to_string();
    if let Some(by) = a.group_by {
        return grouped(ctx, &snaps, &damaged, by, &tenant);
    }
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
    print_table(&snaps)?;
    print_damaged(&damaged, snaps.len())?;
    Ok(ExitCode::SUCCESS)
}

/// The snapshots as a table.
fn print_table(snaps: &[Snapshot]) -> Result<()> {
    out!("{:<8}  {:<20}  {:<16}  {:<16}  {:>10}  paths", "id", "time", "host", "tags", "size");
    for s in snaps {
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
    Ok(())
}

/// The damaged records and the count line.
fn print_damaged(damaged: &[strongroom_core::repo::DamagedRecord], n_snaps: usize) -> Result<()> {
    for d in damaged {
        let id = d.id_hex();
        out!("{:<8}  {:<20}  {}", id.get(..8).unwrap_or(id), "DAMAGED", d.why);
    }
    if damaged.is_empty() {
        out!("{} snapshots", n_snaps);
    } else {
        out!(
            "{} snapshots, {} damaged snapshot records (not restorable; they stop `latest` and prune: see `strongroom repair`)",
            n_snaps,
            damaged.len()
        );
    }
    Ok(())
}

/// `snapshots --group-by`: one table per group; in JSON, restic's shape
/// `[{ "group_key": {...}, "snapshots": [...] }]` (damaged records, whose
/// group is unknown, under a `group_key` of `null`).
fn grouped(
    ctx: &Ctx,
    snaps: &[Snapshot],
    damaged: &[strongroom_core::repo::DamagedRecord],
    by: GroupBy,
    tenant: &str,
) -> Result<ExitCode> {
    let mut groups: std::collections::BTreeMap<GroupKey, Vec<&Snapshot>> = std::collections::BTreeMap::new();
    for s in snaps {
        groups.entry(by.key(&s.record)).or_default().push(s);
    }
    if ctx.global.json {
        let mut v = Vec::new();
        for (key, members) in &groups {
            let list: Vec<SnapshotJson<'_>> = members.iter().map(|s| to_json(s, tenant)).collect();
            v.push(serde_json::json!({ "group_key": key, "snapshots": list }));
        }
        if !damaged.is_empty() {
            let list: Vec<DamagedJson<'_>> = damaged
                .iter()
                .map(|d| {
                    let id = d.id_hex();
                    DamagedJson { id, short_id: id.get(..8).unwrap_or(id), tenant, damaged: &d.why }
                })
                .collect();
            v.push(serde_json::json!({ "group_key": null, "snapshots": list }));
        }
        return ctx.print_json(&v).map(|()| ExitCode::SUCCESS);
    }
    for (key, members) in &groups {
        out!("{key}:");
        let owned: Vec<Snapshot> = members.iter().map(|s| (*s).clone()).collect();
        print_table(&owned)?;
        out!("");
    }
    print_damaged(damaged, snaps.len())?;
    Ok(ExitCode::SUCCESS)
}
