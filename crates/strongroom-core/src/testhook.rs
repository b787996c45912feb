//! Hooks for tests, compiled only with the `test-hooks` cargo feature.
//!
//! The integration tests need to make a process fail at a chosen store
//! write, shorten the lock TTL, or stop a process at a chosen point so a
//! race can be played out deterministically (swap a symlink between the
//! walk and the open, say). Those hooks are driven by environment
//! variables, and an environment variable that changes how a backup tool
//! writes or locks must not exist in the binary users run: a hostile
//! environment (a wrapper script, a cron line) could otherwise weaken it.
//! So every hook reads its variable through [`var`], which is `None` in a
//! build without the feature; the release binary ignores them all.
//!
//! `cargo test` turns the feature on through the package's dev-dependency
//! on itself (Cargo.toml); `cargo build --release` does not.
//!
//! **Invariant:** no code outside this module reads a test-only variable.

/// Whether this build carries the test hooks.
pub const ENABLED: bool = cfg!(feature = "test-hooks");

/// A test-only environment variable: its value in a build with the
/// `test-hooks` feature, `None` otherwise.
pub fn var(name: &str) -> Option<String> {
    if ENABLED {
        std::env::var(name).ok()
    } else {
        None
    }
}

/// Stops the process at `point` when `STRONGROOM_TEST_PAUSE` names it
/// (`POINT` or `POINT:DETAIL`, where `detail` must equal DETAIL), until
/// the test lets it go: the hook creates `<STRONGROOM_TEST_PAUSE_DIR>/reached`
/// and waits until `<dir>/go` exists (polling every 5 ms, 60 s at most),
/// then removes `go` so the next visit pauses again only if the test
/// creates it anew. A test thus waits for `reached`, changes the world,
/// and creates `go`: the interleaving is fixed, not a sleep-and-hope.
///
/// Compiled to nothing without the feature.
pub fn pause(point: &str, detail: &str) {
    if !ENABLED {
        return;
    }
    let Some(want) = var("STRONGROOM_TEST_PAUSE") else { return };
    let hit = match want.split_once(':') {
        Some((p, d)) => p == point && d == detail,
        None => want == point,
    };
    if !hit {
        return;
    }
    let Some(dir) = var("STRONGROOM_TEST_PAUSE_DIR") else { return };
    let dir = std::path::PathBuf::from(dir);
    let go = dir.join("go");
    if std::fs::write(dir.join("reached"), detail).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !go.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = std::fs::remove_file(&go);
}

#[cfg(test)]
mod tests {
    /// Names of the test-only variables: each may be read only through
    /// [`super::var`].
    const TEST_ONLY: &[&str] = &["STRONGROOM_FAULT", "STRONGROOM_LOCK_TTL_SECS", "STRONGROOM_TEST_"];

    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn no_code_outside_this_module_reads_a_test_only_variable_but_through_var() {
        // This crate's sources and the command line's, at the workspace root.
        let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        sources(&here.join("src"), &mut files);
        sources(&here.join("../../src"), &mut files);
        assert!(files.len() > 20, "found the sources");
        let mut bad = Vec::new();
        for f in files.iter().filter(|f| !f.ends_with("testhook.rs")) {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                let named = TEST_ONLY.iter().any(|v| code.contains(&format!("\"{v}")));
                if named && !code.contains("testhook::var(\"") {
                    bad.push(format!("{}:{}: {}", f.display(), i + 1, line.trim()));
                }
            }
        }
        assert!(bad.is_empty(), "test-only variables read outside testhook::var:\n{}", bad.join("\n"));
    }
}
