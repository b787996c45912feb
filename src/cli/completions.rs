//! `strongroom completions SHELL` and `strongroom man --out DIR`, both
//! generated from the clap definitions.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use super::{Cli, Ctx};

/// Arguments of `completions`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell
    shell: clap_complete::Shell,
}

/// Arguments of `man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write strongroom.1 and one page per subcommand into
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn completions(a: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "strongroom", &mut buf);
    use std::io::Write as _;
    std::io::stdout().write_all(&buf)?;
    Ok(ExitCode::SUCCESS)
}

pub fn man(ctx: &Ctx, a: ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, "strongroom", &a.out, &mut written)?;
    if ctx.global.json {
        ctx.print_json(&written)?;
    } else {
        ctx.say(format_args!("wrote {} man pages to {}", written.len(), a.out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per command, named like git's: `strongroom-agent-run.1`.
fn write_pages(cmd: &clap::Command, name: &str, dir: &std::path::Path, written: &mut Vec<String>) -> Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).title(name.to_uppercase()).render(&mut buf)?;
    let file = dir.join(format!("{name}.1"));
    std::fs::write(&file, buf).with_context(|| format!("writing {}", file.display()))?;
    written.push(file.display().to_string());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
