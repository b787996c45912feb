//! The `strongroom` command; everything lives in `strongroom::cli`.

fn main() -> std::process::ExitCode {
    strongroom::cli::main()
}
