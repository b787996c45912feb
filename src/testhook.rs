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
