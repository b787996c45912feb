//! `strongroom key-cache …`: the entries `--key-cache` keeps on this host.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use strongroom_core::key_cache;

use super::Ctx;

/// Key cache subcommands.
#[derive(Subcommand, Debug)]
pub enum KeyCacheCommand {
    /// List this user's entries: file, when written, when they expire (stores and tenants are hashed)
    List,
    /// Delete every entry of this user: the next command opened with a password derives its key again
    Clear,
}

pub fn run(ctx: &Ctx, c: KeyCacheCommand) -> Result<ExitCode> {
    let cache_dir = ctx.cache_dir()?;
    match c {
        KeyCacheCommand::List => {
            let entries = key_cache::list(&cache_dir)?;
            if ctx.global.json {
                let rows: Vec<_> = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "file": e.file,
                            "created": e.created.map(time),
                            "expires": e.expires.map(time),
                        })
                    })
                    .collect();
                ctx.print_json(&rows)?;
            } else if entries.is_empty() {
                ctx.say("no key cache entries")?;
            } else {
                for e in &entries {
                    let shown = |t: Option<i64>| t.map_or_else(|| "(damaged)".to_string(), time);
                    ctx.say(format!(
                        "{}  created {}  expires {}",
                        e.file.display(),
                        shown(e.created),
                        shown(e.expires)
                    ))?;
                }
            }
        }
        KeyCacheCommand::Clear => {
            let n = key_cache::clear(&cache_dir)?;
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "removed": n }))?;
            } else {
                ctx.say(format!("removed {n} key cache entries"))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A Unix time as RFC 3339, in UTC.
fn time(secs: i64) -> String {
    jiff::Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}
