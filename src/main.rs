//! The `strongroom` command: argument parsing, progress and output for
//! every subcommand; the work itself is done by `strongroom-core`.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
