//! The tenant audit log: every state-changing command appends a
//! sealed, hash-chained entry; `audit verify` names a removed, reordered
//! or altered entry, and a log cut short at its end on a host that saw it
//! longer.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{assert_code, random_bytes, stderr, TestRepo};

fn entries(r: &TestRepo) -> Vec<Value> {
    match r.json(&["audit"]) {
        Value::Array(v) => v,
        other => panic!("audit --json is not an array: {other}"),
    }
}

fn entry_files(r: &TestRepo) -> Vec<PathBuf> {
    r.objects_under("tenants/default/audit/").into_iter().map(|(_, p)| p).collect()
}

/// A repository whose log holds init, two backups, a failed backup, a
/// hold, a forget and a prune.
fn logged_repo() -> TestRepo {
    let r = TestRepo::small();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a.bin"), random_bytes(1, 200_000)).unwrap();
    r.backup(&[&data], &["--tag", "first"]);
    std::fs::write(data.join("b.bin"), random_bytes(2, 100_000)).unwrap();
    r.backup(&[&data], &[]);
    // Fails after opening: an entry with result "error".
    let out = r.run(&["backup", "--parent", "ffffffff", data.to_str().unwrap()], 1);
    assert!(stderr(&out).contains("ffffffff"), "{}", stderr(&out));
    r.ok(&["hold", "add", "latest", "--reason", "legal"]);
    r.ok(&["forget", "--keep-last", "1"]);
    r.ok(&["prune"]);
    r
}

#[test]
fn commands_append_chained_entries_and_export() {
    let r = logged_repo();
    let e = entries(&r);
    let commands: Vec<&str> = e.iter().map(|x| x["command"].as_str().unwrap()).collect();
    assert_eq!(commands, ["init", "backup", "backup", "backup", "hold add", "forget", "prune"], "{e:#?}");
    for (i, x) in e.iter().enumerate() {
        assert_eq!(x["seq"].as_u64(), Some(i as u64 + 1));
        assert!(!x["host"].as_str().unwrap().is_empty());
        assert!(!x["user"].as_str().unwrap().is_empty());
    }
    assert_eq!(e[1]["result"], "ok");
    assert_eq!(e[1]["snapshots"].as_array().unwrap().len(), 1, "backup names its snapshot");
    assert!(e[1]["bytes"].as_u64().unwrap() > 200_000, "backup records the bytes added");
    assert_eq!(e[3]["result"], "error");
    assert!(e[3]["error"].as_str().unwrap().contains("ffffffff"));
    assert_eq!(e[5]["snapshots"].as_array().unwrap().len(), 1, "forget names the removed snapshot");
    assert!(e[1]["args"].as_array().unwrap().iter().any(|a| a == "backup"));

    let csv = r.ok(&["audit", "export", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "seq,prev,time,host,user,command,args,snapshots,bytes,result,error");
    assert_eq!(lines.len(), e.len() + 1);
    let json: Value = serde_json::from_str(&r.ok(&["audit", "export", "--format", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), e.len());

    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!(v["entries"].as_u64(), Some(e.len() as u64));
    // Reading commands add nothing.
    r.ok(&["snapshots"]);
    assert_eq!(entries(&r).len(), e.len());
}

fn verify_fails(r: &TestRepo, needle: &str) {
    let out = r.run(&["audit", "verify"], 1);
    assert!(stderr(&out).contains(needle), "expected {needle:?} in:\n{}", stderr(&out));
}

#[test]
fn verify_names_removed_reordered_altered_and_truncated_entries() {
    let r = logged_repo();
    let files = entry_files(&r);
    assert_eq!(files.len(), 7);

    // Removed from the middle.
    let c = r.copy();
    std::fs::remove_file(&entry_files(&c)[2]).unwrap();
    verify_fails(&c, "entry 3 is missing");

    // Two entries swapped.
    let c = r.copy();
    let f = entry_files(&c);
    let tmp = c.path("swap");
    std::fs::rename(&f[3], &tmp).unwrap();
    std::fs::rename(&f[4], &f[3]).unwrap();
    std::fs::rename(&tmp, &f[4]).unwrap();
    verify_fails(&c, "entry 4: holds entry 5");

    // One byte altered.
    let c = r.copy();
    let f = entry_files(&c);
    let mut b = std::fs::read(&f[1]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&f[1], b).unwrap();
    verify_fails(&c, "entry 2: altered or damaged");

    // An entry replaced by a well-formed one from another log position:
    // entry 5 rewritten with entry 6's bytes fails the chain at 5.
    let c = r.copy();
    let f = entry_files(&c);
    std::fs::copy(&f[5], &f[4]).unwrap();
    verify_fails(&c, "entry 5: holds entry 6");

    // Cut off at the end: only a host that saw the longer log can tell.
    std::fs::remove_file(files.last().unwrap()).unwrap();
    verify_fails(&r, "entries 7 to 7 are missing");
    let fresh_host = r.copy();
    let out = fresh_host.run(&["audit", "verify"], 0);
    assert_code(&out, 0, "a host without memory of the log");
}

#[test]
fn appends_from_concurrent_processes_all_land() {
    let r = TestRepo::new();
    let data = r.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("x"), b"x").unwrap();
    // Holds are exclusive-locked; backups share the lock and run at once.
    let children: Vec<_> = (0..3)
        .map(|_| {
            r.command(&["backup", "--lock-wait", "60s", data.to_str().unwrap()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert_code(&c.wait_with_output().unwrap(), 0, "concurrent backup");
    }
    let e = entries(&r);
    assert_eq!(e.len(), 4, "init and three backups: {e:#?}");
    let v = r.json(&["audit", "verify"]);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
}
