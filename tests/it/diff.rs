//! diff and find: added, removed and modified entries (content or metadata,
//! which) between two snapshots with byte counts; which snapshots hold a path.

use std::os::unix::fs::PermissionsExt;

use crate::support::{u64_field, TestRepo};

#[test]
fn diff_reports_added_removed_and_modified_entries() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("keep")).unwrap();
    std::fs::write(src.join("keep/same.txt"), b"unchanged").unwrap();
    std::fs::write(src.join("gone.txt"), b"12345").unwrap();
    std::fs::write(src.join("edit.txt"), b"before").unwrap();
    std::fs::write(src.join("mode.txt"), b"mode").unwrap();
    let a = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();

    std::fs::remove_file(src.join("gone.txt")).unwrap();
    std::fs::write(src.join("edit.txt"), b"after, and longer").unwrap();
    std::fs::set_permissions(src.join("mode.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(src.join("new/deep")).unwrap();
    std::fs::write(src.join("new/deep/file.bin"), [7u8; 1000]).unwrap();
    let b = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();

    let d = r.json(&["diff", &a, &b]);
    let p = |name: &str| format!("{}/{name}", src.display());
    let entries = d["entries"].as_array().unwrap();
    let find =
        |path: &str| entries.iter().find(|e| e["path"] == path).unwrap_or_else(|| panic!("{path} missing in {d}"));
    assert_eq!(find(&p("gone.txt"))["change"], "removed");
    assert_eq!(find(&p("new"))["change"], "added");
    assert_eq!(find(&p("new/deep/file.bin"))["change"], "added");
    let edit = find(&p("edit.txt"));
    assert_eq!(edit["change"], "modified");
    assert!(edit["what"].as_array().unwrap().iter().any(|w| w == "content"), "{edit}");
    let mode = find(&p("mode.txt"));
    assert_eq!(mode["what"], serde_json::json!(["metadata"]), "{mode}");
    assert!(entries.iter().all(|e| e["path"] != p("keep/same.txt").as_str()), "an unchanged file is listed: {d}");
    assert_eq!(u64_field(&d, "removed"), 1);
    assert_eq!(u64_field(&d, "added"), 3);
    assert_eq!(u64_field(&d, "added_bytes"), 1000 + 11);
    assert_eq!(u64_field(&d, "removed_bytes"), 5);
    // A snapshot compared with itself has no differences.
    let same = r.json(&["diff", &b, "latest"]);
    assert!(same["entries"].as_array().unwrap().is_empty(), "{same}");
}

#[test]
fn find_names_the_snapshots_that_hold_a_matching_path() {
    let r = TestRepo::new();
    let src = r.path("src");
    std::fs::create_dir_all(src.join("logs")).unwrap();
    std::fs::write(src.join("logs/a.log"), b"first").unwrap();
    let a = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();
    std::fs::write(src.join("logs/b.log"), b"second!").unwrap();
    let b = r.backup(&[&src], &[])["snapshot_id"].as_str().unwrap().to_string();

    let all = r.json(&["find", "*.log"]);
    let hits: Vec<(String, String, u64)> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (f["snapshot"].as_str().unwrap().to_string(), f["path"].as_str().unwrap().to_string(), u64_field(f, "size"))
        })
        .collect();
    let a_log = format!("{}/logs/a.log", src.display());
    let b_log = format!("{}/logs/b.log", src.display());
    assert_eq!(hits, vec![(a.clone(), a_log.clone(), 5), (b.clone(), a_log, 5), (b.clone(), b_log.clone(), 7)]);
    // Limited to one snapshot, and by a whole-path pattern.
    let one = r.json(&["find", &b_log, "--snapshot", &a]);
    assert!(one.as_array().unwrap().is_empty(), "{one}");
    let one = r.json(&["find", &b_log, "--snapshot", &b]);
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    // A malformed pattern is a clear error.
    r.run(&["find", "["], 1);
}
