//! A hostile local user: someone who can change the directories being
//! backed up or restored while strongroom works on them (swap a file for a
//! symlink, a directory for a link to `/etc`, plant a hard link, read a
//! private directory before its mode is set). Races are made deterministic
//! with the test-build pause points of `crates/strongroom-core/src/testhook.rs`: the process
//! stops at a named point, the test changes the tree, then lets it go.
//! One submodule per family of attacks.

mod backup;
mod modes;
mod restore;
