//! Damage to the tenant's objects that `check` used to skip: hold records,
//! tenant settings, key slots other than the one that opened the tenant,
//! and the repository's escrow key. Found by the corruption campaign
//! (scripts/campaigns/corrupt.sh): each went unreported by `check
//! --read-data`, so damage there was noticed only when the object was
//! next needed (a forget that applies the plan, a password that no longer
//! opens, an escrow recovery).

use crate::support::{assert_code, flip_middle_byte, stderr, truncate_half, TestRepo, PASSWORD};

/// A repository with one snapshot.
fn repo_with_snapshot() -> TestRepo {
    let r = TestRepo::small();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha\n").unwrap();
    r.backup(&[&src], &[]);
    r
}

/// Runs `check --read-data`, expects exit 1 and an error naming `what`.
fn check_reports(r: &TestRepo, what: &str) {
    let out = r.cmd(&["check", "--read-data"]);
    assert_code(&out, 1, "check --read-data of a damaged repository");
    let err = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(err.contains(what), "check does not name {what}:\n{err}");
}

#[test]
fn check_reports_a_hold_record_that_does_not_open() {
    let r = repo_with_snapshot();
    r.ok(&["hold", "add", "--reason", "legal", "latest"]);
    r.ok(&["check", "--read-data"]);
    let (_, hold) = r.objects_under("tenants/default/holds/").pop().expect("a hold record");
    flip_middle_byte(&hold);
    check_reports(&r, "hold of snapshot");
}

#[test]
fn check_reports_tenant_settings_that_do_not_open() {
    let r = repo_with_snapshot();
    r.ok(&["tenant", "set", "default", "--plan", "basic"]);
    r.ok(&["check", "--read-data"]);
    let (_, settings) = r.objects_under("tenants/default/meta/settings").pop().expect("a settings object");
    truncate_half(&settings);
    check_reports(&r, "meta/settings");
}

#[test]
fn check_reports_a_damaged_key_slot_besides_the_one_that_opened_the_tenant() {
    let r = repo_with_snapshot();
    // A second slot with the same password: either opens the tenant.
    let out = r
        .command(&["tenant", "key", "add", "--label", "second", "--kdf-memory-kib", "19456", "--kdf-passes", "2"])
        .env("STRONGROOM_NEW_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_code(&out, 0, "tenant key add");
    r.ok(&["check", "--read-data"]);
    let slots = r.objects_under("tenants/default/keys/");
    assert_eq!(slots.len(), 2);
    truncate_half(&slots[0].1);
    check_reports(&r, &slots[0].0);
}

#[test]
fn check_reports_a_damaged_escrow_key() {
    let r = repo_with_snapshot();
    let (secret, public) = (r.path("escrow.secret"), r.path("escrow.pub"));
    r.ok(&["escrow", "keygen", "--secret-out", secret.to_str().unwrap(), "--public-out", public.to_str().unwrap()]);
    r.ok(&["escrow", "set", public.to_str().unwrap()]);
    r.ok(&["check", "--read-data"]);
    truncate_half(&r.repo.join("escrow"));
    check_reports(&r, "escrow");
}

#[test]
fn check_reports_an_escrow_key_that_is_not_the_one_the_tenant_is_bound_to() {
    let r = repo_with_snapshot();
    let (secret, public) = (r.path("escrow.secret"), r.path("escrow.pub"));
    r.ok(&["escrow", "keygen", "--secret-out", secret.to_str().unwrap(), "--public-out", public.to_str().unwrap()]);
    r.ok(&["escrow", "set", public.to_str().unwrap()]);
    r.ok(&["check", "--read-data"]);
    // One hex digit changed: the text still parses, as another key.
    let path = r.repo.join("escrow");
    let mut text = std::fs::read(&path).unwrap();
    let last = text.iter().rposition(|b| b.is_ascii_hexdigit()).unwrap();
    text[last] = if text[last] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &text).unwrap();
    check_reports(&r, "differs from the key");
}

/// Someone with write access replaces the escrow key with their own. A
/// host with an empty cache gives the tenant no slot for it (the tenant's
/// binding record names the real key), the attacker's secret opens
/// nothing, the operator's still does, and `check` reports the swap.
#[test]
fn a_replaced_escrow_key_gets_no_slot_on_a_fresh_host_and_check_reports_it() {
    let r = repo_with_snapshot();
    let path = |n: &str| r.path(n).to_str().unwrap().to_string();
    r.ok(&["escrow", "keygen", "--secret-out", &path("op.secret"), "--public-out", &path("op.pub")]);
    r.ok(&["escrow", "set", &path("op.pub")]);
    r.ok(&["check"]);
    r.ok(&["escrow", "keygen", "--secret-out", &path("evil.secret"), "--public-out", &path("evil.pub")]);
    std::fs::copy(r.path("evil.pub"), r.repo.join("escrow")).unwrap();
    // Another host, with its own (empty) cache.
    let other = r.command(&["snapshots"]).env("STRONGROOM_CACHE_DIR", r.path("other-cache")).output().unwrap();
    assert_code(&other, 0, "snapshots on a host with an empty cache");
    let evil = r
        .command(&["--escrow-secret", &path("evil.secret"), "snapshots"])
        .env_remove("STRONGROOM_PASSWORD")
        .output()
        .unwrap();
    assert_code(&evil, 12, "the attacker's escrow secret");
    let op = r
        .command(&["--escrow-secret", &path("op.secret"), "snapshots"])
        .env_remove("STRONGROOM_PASSWORD")
        .output()
        .unwrap();
    assert_code(&op, 0, "the operator's escrow secret");
    check_reports(&r, "differs from the key");
}
