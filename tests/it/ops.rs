//! Operations around the engine: `health` exit codes and the check record
//! it reads, `--metrics-textfile`, shell completions and man pages.

use crate::support::{stderr, TestRepo};

#[test]
fn health_names_stale_tenants_and_failed_checks() {
    let r = TestRepo::new();
    // No snapshot yet: unhealthy.
    let out = r.run(&["health", "--max-age", "1h"], 1);
    assert!(stderr(&out).contains("unhealthy: tenant default") && stderr(&out).contains("no snapshots"), "{out:?}");

    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    r.backup(&[&src], &["--time", "2020-01-01 00:00"]);
    let out = r.run(&["health", "--max-age", "1h"], 1);
    assert!(stderr(&out).contains("more than 1h"), "{}", stderr(&out));
    r.backup(&[&src], &[]);
    let v = r.json(&["health", "--max-age", "1h"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tenants"][0]["snapshots"], 2);
    assert!(v["tenants"][0]["last_check"].is_null());

    // A check that finds damage is remembered until the next good one.
    r.ok(&["check"]);
    assert_eq!(r.json(&["health", "--max-age", "1h"])["tenants"][0]["last_check"]["ok"], true);
    let (_, pack) = r.objects_under("tenants/default/packs/").into_iter().next().unwrap();
    std::fs::remove_file(pack).unwrap();
    r.run(&["check"], 1);
    let out = r.run(&["health", "--max-age", "1h", "--json"], 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tenants"][0]["last_check"]["ok"], false, "{v}");
    assert!(v["tenants"][0]["problems"][0].as_str().unwrap().contains("last check"), "{v}");
}

#[test]
fn metrics_textfile_after_backup_and_failed_backup() {
    let r = TestRepo::new();
    let prom = r.path("m/strongroom.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let p = prom.to_str().unwrap();
    let src = r.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), vec![7u8; 5000]).unwrap();
    r.backup(&[&src], &["--metrics-textfile", p]);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(r#"backup_success_total{tenant="default",job=""} 1"#), "{text}");
    assert!(text.contains(r#"backup_size_bytes{tenant="default",job=""} 5000.0"#), "{text}");
    assert!(text.contains("last_success_timestamp_seconds{"), "{text}");

    r.run(&["backup", "--metrics-textfile", p, "--stdin-from-command", "--", "false"], 1);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(r#"backup_failure_total{tenant="default",job=""} 1"#), "{text}");
    // Carried over from the file it replaced.
    assert!(text.contains(r#"backup_success_total{tenant="default",job=""} 1"#), "{text}");
    assert!(text.contains("last_success_timestamp_seconds{"), "{text}");
    assert_eq!(std::fs::read_dir(prom.parent().unwrap()).unwrap().count(), 1, "temporary files left");

    r.ok(&["stats", "--metrics-textfile", p]);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(r#"repository_stored_bytes{tenant="default",job=""}"#), "{text}");
}

#[test]
fn completions_and_man_pages_are_generated() {
    let r = TestRepo::uninitialized();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = r.ok(&["completions", shell]);
        assert!(out.len() > 1000 && out.contains("agent"), "{shell}: {} bytes", out.len());
    }
    let dir = r.path("man");
    r.ok(&["man", "--out", dir.to_str().unwrap()]);
    for page in ["strongroom.1", "strongroom-backup.1", "strongroom-agent.1", "strongroom-agent-check-config.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH") && text.len() > 200, "{page}:\n{text}");
    }
}
