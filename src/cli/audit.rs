//! `strongroom audit`: read, export and verify the tenant's audit log.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use super::{Ctx, EXIT_ERROR};
use strongroom_core::audit;

/// Arguments of `audit`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    cmd: Option<AuditCommand>,
}

/// `audit` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Write every entry as JSON or CSV to standard output
    Export(ExportArgs),
    /// Check the hash chain: names a removed, reordered or altered entry
    Verify,
}

/// Export formats.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Format {
    /// A JSON array.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Arguments of `audit export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "json")]
    format: Format,
}

/// The audit log as CSV (RFC 4180 quoting, `\n` line ends), header first.
/// Columns added later (`paths`, `opened_with`) come last, so that readers
/// of the earlier columns by position are unaffected; they are empty for
/// entries written before they were recorded.
fn audit_csv(entries: &[audit::Entry]) -> Result<String> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record([
        "seq",
        "prev",
        "time",
        "host",
        "user",
        "command",
        "args",
        "snapshots",
        "bytes",
        "result",
        "error",
        "paths",
        "opened_with",
    ])?;
    for e in entries {
        w.write_record([
            e.seq.to_string(),
            e.prev.to_string(),
            e.time.clone(),
            e.host.clone(),
            e.user.clone(),
            e.command.clone(),
            e.args.join(" "),
            e.snapshots.join(" "),
            e.bytes.to_string(),
            e.result.to_string(),
            e.error.clone().unwrap_or_default(),
            e.paths.join(" "),
            e.opened_with.clone().unwrap_or_default(),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner().map_err(|e| e.into_error())?)?)
}

pub fn run(ctx: &Ctx, a: AuditArgs) -> Result<ExitCode> {
    let repo = ctx.open()?;
    match a.cmd {
        None => {
            let entries = ctx.rt.block_on(audit::list(repo.scope()))?;
            if ctx.global.json {
                ctx.print_json(&entries)?;
            } else if !ctx.global.quiet {
                for e in &entries {
                    let snaps: Vec<&str> = e.snapshots.iter().map(|s| s.get(..8).unwrap_or(s)).collect();
                    let escrow = if e.opened_with.as_deref() == Some("escrow") { "  [escrow]" } else { "" };
                    out!(
                        "{:>5}  {}  {}@{}  {:<18}  {:<5}  {}{}{}{}",
                        e.seq,
                        e.time.get(..19).unwrap_or(&e.time),
                        e.user,
                        e.host,
                        e.command,
                        e.result,
                        snaps.join(","),
                        if e.paths.is_empty() { String::new() } else { format!("  {}", e.paths.join(" ")) },
                        escrow,
                        e.error.as_deref().map(|x| format!("  error: {x}")).unwrap_or_default()
                    );
                }
            }
        }
        Some(AuditCommand::Export(x)) => {
            let entries = ctx.rt.block_on(audit::list(repo.scope()))?;
            match x.format {
                Format::Json => ctx.print_json(&entries)?,
                Format::Csv => {
                    use std::io::Write as _;
                    std::io::stdout().write_all(audit_csv(&entries)?.as_bytes())?;
                }
            }
        }
        Some(AuditCommand::Verify) => {
            let r = ctx.rt.block_on(audit::verify(repo.scope(), repo.host_memory()))?;
            if ctx.global.json {
                ctx.print_json(&r)?;
            } else {
                for p in &r.problems {
                    eprintln!("strongroom: audit log of tenant {}: {p}", repo.tenant());
                }
                if r.problems.is_empty() {
                    ctx.say(format_args!(
                        "audit log of tenant {}: {} entries, chain intact",
                        repo.tenant(),
                        r.entries
                    ))?;
                }
            }
            if !r.problems.is_empty() {
                return Ok(ExitCode::from(EXIT_ERROR));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
