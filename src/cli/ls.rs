//! `strongroom ls`

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::Ctx;
use strongroom_core::id::BlobId;
use strongroom_core::repo::Repo;
use strongroom_core::snapshot::Pick;
use strongroom_core::tree::{self, Node, NodeKind};

/// Arguments of `ls`.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot: an id, a unique prefix, or `latest`
    snapshot: String,
    /// Directory (or file) in the snapshot [default: /]
    path: Option<String>,
    /// Show mode, owner, size and mtime
    #[arg(short, long)]
    long: bool,
    /// List everything below PATH, not just its entries
    #[arg(short = 'R', long)]
    recursive: bool,
    /// With `latest`: the newest snapshot at or before this time
    #[arg(long)]
    at: Option<String>,
    /// Which snapshots `latest` looks at
    #[command(flatten)]
    filter: super::filter::FilterArgs,
}

#[derive(serde::Serialize)]
struct Entry {
    path: String,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    mode: u32,
    permissions: String,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
}

fn entry(path: &str, n: &Node) -> Entry {
    let mtime = jiff::Timestamp::new(n.mtime, n.mtime_nsec as i32).map(|t| t.to_string()).unwrap_or_default();
    Entry {
        path: path.to_string(),
        name: String::from_utf8_lossy(&n.name).to_string(),
        kind: tree::kind_name(n),
        mode: n.mode & 0o7777,
        permissions: tree::mode_string(n),
        uid: n.uid,
        gid: n.gid,
        size: n.size,
        mtime,
        link_target: match &n.kind {
            NodeKind::Symlink { target } => Some(String::from_utf8_lossy(target).to_string()),
            _ => None,
        },
    }
}

fn collect(
    ctx: &Ctx,
    repo: &Repo,
    tree_id: &BlobId,
    prefix: &str,
    recursive: bool,
    out: &mut Vec<Entry>,
) -> Result<()> {
    let t = ctx.rt.block_on(repo.load_tree(tree_id))?;
    for n in &t {
        let p = format!("{}/{}", prefix.trim_end_matches('/'), String::from_utf8_lossy(&n.name));
        out.push(entry(&p, n));
        if let (true, NodeKind::Dir { subtree }) = (recursive, &n.kind) {
            collect(ctx, repo, subtree, &p, true, out)?;
        }
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: LsArgs) -> Result<ExitCode> {
    let at = a.at.as_deref().map(strongroom_core::snapshot::parse_time).transpose()?;
    let repo = ctx.open()?;
    let filter = a.filter.filter();
    let snap = repo.resolve(&a.snapshot, at, &Pick { filter: &filter, named: a.path.as_deref() })?;
    let path = a.path.clone().unwrap_or_else(|| "/".into());
    let mut out = Vec::new();
    let clean = format!("/{}", tree::components(&path).join("/"));
    match ctx.rt.block_on(repo.find(&snap.record.tree, &path, &snap.id))? {
        None => collect(ctx, &repo, &snap.record.tree, "/", a.recursive, &mut out)?,
        Some(n) => match n.kind {
            NodeKind::Dir { subtree } => collect(ctx, &repo, &subtree, &clean, a.recursive, &mut out)?,
            _ => out.push(entry(&clean, &n)),
        },
    }
    if ctx.global.json {
        return ctx.print_json(&out).map(|()| ExitCode::SUCCESS);
    }
    for e in &out {
        let suffix = e.link_target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
        if a.long {
            out!("{} {:>6} {:>6} {:>12} {} {}{suffix}", e.permissions, e.uid, e.gid, e.size, e.mtime, e.path);
        } else {
            out!("{}", e.path);
        }
    }
    Ok(ExitCode::SUCCESS)
}
