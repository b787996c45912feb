//! The agent: configuration errors with positions, `agent run`, tasks that
//! come due while their job is busy or while the agent is down, hooks and
//! notifications, and the end to end run against a real PostgreSQL
//! (pg_dump streamed on a one-second schedule, database changed between
//! runs, a chosen snapshot restored with `dump | psql` and compared;
//! metrics scraped over HTTP; a failing source command makes a failure
//! metric and no snapshot).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{assert_code, stderr, TestRepo, PASSWORD};

/// A job config for `repo`: stream `command` every second.
fn stream_job(r: &TestRepo, name: &str, command: &[&str], extra: &str) -> String {
    let cmd: Vec<String> = command.iter().map(|c| format!("{c:?}")).collect();
    format!(
        "[[job]]\nname = {name:?}\ntenant = \"default\"\nrepository = {:?}\npassword_file = {:?}\n\
         schedule = \"* * * * * *\"\ncommand = [{}]\nstdin_name = \"{name}.out\"\n{extra}\n",
        r.repo.to_str().unwrap(),
        password_file(r).to_str().unwrap(),
        cmd.join(", ")
    )
}

fn password_file(r: &TestRepo) -> PathBuf {
    let p = r.path("password");
    if !p.exists() {
        std::fs::write(&p, format!("{PASSWORD}\n")).unwrap();
    }
    p
}

fn write_config(r: &TestRepo, text: &str) -> PathBuf {
    let p = r.path("agent.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_reports_line_and_column() {
    let r = TestRepo::uninitialized();
    let text = stream_job(&r, "db", &["echo", "hi"], "plan = \"gold\"")
        + &stream_job(&r, "db", &["echo", "hi"], "timezone = \"Mars/Olympus\"");
    let cfg = write_config(&r, &text);
    let out = r.run(&["agent", "check-config", cfg.to_str().unwrap()], 2);
    let err = stderr(&out);
    let file = cfg.display().to_string();
    assert!(err.contains(&format!("{file}:9:8: unknown plan \"gold\"")), "{err}");
    assert!(err.contains(&format!("{file}:11:8: job name \"db\" is used twice")), "{err}");
    assert!(err.contains(&format!("{file}:18:12: unknown time zone")), "{err}");

    let cfg = write_config(&r, "[[job]]\nname = \"x\"\nschedul = 1\n");
    let err = stderr(&r.run(&["agent", "check-config", cfg.to_str().unwrap()], 2));
    assert!(err.contains(":3:1: unknown field `schedul`"), "{err}");

    // Every unknown key is reported, with the other errors.
    let text = stream_job(&r, "db", &["echo", "hi"], "colour = 1\nplan = \"gold\"\nflavour = \"x\"");
    let cfg = write_config(&r, &text);
    let err = stderr(&r.run(&["agent", "check-config", cfg.to_str().unwrap()], 2));
    assert!(err.contains(&format!("{file}:9:1: unknown field `colour`")), "{err}");
    assert!(err.contains(&format!("{file}:10:8: unknown plan \"gold\"")), "{err}");
    assert!(err.contains(&format!("{file}:11:1: unknown field `flavour`")), "{err}");

    let cfg = write_config(&r, &stream_job(&r, "db", &["echo", "hi"], ""));
    let v = r.json(&["agent", "check-config", cfg.to_str().unwrap()]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["jobs"][0], "db");
}

#[test]
fn agent_run_backs_up_applies_the_plan_and_fails_on_a_failing_source() {
    let r = TestRepo::new();
    let text = stream_job(
        &r,
        "good",
        &["sh", "-c", "echo one; date +%N"],
        "plan = \"basic\"\ntags = [\"t1\"]\ncheck_subset = \"50%\"",
    ) + &stream_job(&r, "bad", &["sh", "-c", "echo partial; exit 7"], "");
    let cfg = write_config(&r, &text);
    let prom = r.path("metrics.prom");
    let cfg_s = cfg.to_str().unwrap();
    for _ in 0..3 {
        let v = r.json(&["agent", "run", "--config", cfg_s, "good", "--metrics-textfile", prom.to_str().unwrap()]);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
    }
    // The basic plan keeps the newest snapshot of the day, and the oldest
    // while its counts last (as restic): the middle one goes.
    let snaps = r.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0]["tags"][0], "t1");
    let text = std::fs::read_to_string(&prom).unwrap();
    // Counters carry over from the file each run replaces.
    assert!(text.contains(r#"backup_success_total{tenant="default",job="good"} 3"#), "{text}");
    assert!(text.contains(r#"repository_stored_bytes{tenant="default",job="good"}"#), "{text}");

    let out = r.run(&["agent", "run", "--config", cfg_s, "bad", "--metrics-textfile", prom.to_str().unwrap()], 1);
    assert!(stderr(&out).contains("exit status: 7"), "{}", stderr(&out));
    assert_eq!(r.snapshots().len(), 2, "a failed source command leaves no snapshot");
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains(r#"backup_failure_total{tenant="default",job="bad"} 1"#), "{text}");
    assert!(text.contains(r#"backup_success_total{tenant="default",job="good"} 3"#), "{text}");

    // A job with paths and a command makes one snapshot of each.
    let src = r.path("src");
    std::fs::create_dir_all(src.join("skip")).unwrap();
    std::fs::write(src.join("keep.txt"), b"kept").unwrap();
    std::fs::write(src.join("skip/x"), b"skipped").unwrap();
    let both = stream_job(&r, "both", &["echo", "streamed"], "")
        + &format!("paths = [{:?}]\nexclude = [\"skip\"]\n", src.to_str().unwrap());
    let cfg2 = r.path("both.toml");
    std::fs::write(&cfg2, both).unwrap();
    let v = r.json(&["agent", "run", "--config", cfg2.to_str().unwrap(), "both"]);
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 2, "{v}");
    let listing = r.ok(&["ls", "-R", v["snapshots"][0].as_str().unwrap()]);
    assert!(listing.contains("keep.txt") && !listing.contains("skip"), "{listing}");

    // A check recorded for health; a drill only where verify-restore exists.
    let v = r.json(&["agent", "run", "--config", cfg_s, "good", "--task", "check"]);
    assert_eq!(v["ok"], true, "{v}");
    let v = r.json(&["agent", "run", "--config", cfg_s, "good", "--task", "prune"]);
    assert_eq!(v["ok"], true, "{v}");
    // health over every tenant of the configuration sees that check; the
    // tenant is fine, but the job whose backup failed is not.
    let out = r.run(&["--json", "health", "--max-age", "1h", "--config", cfg_s], 1);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1, "one (repository, tenant) pair: {v}");
    assert_eq!((&v["tenants"][0]["ok"], &v["tenants"][0]["last_check"]["ok"]), (&true.into(), &true.into()), "{v}");
    let job = |name: &str| v["jobs"].as_array().unwrap().iter().find(|j| j["job"] == name).unwrap().clone();
    let (good, bad) = (job("good"), job("bad"));
    assert_eq!((&good["ok"], &good["tasks"]["check"]["last_ok"]), (&true.into(), &true.into()), "{v}");
    assert!(good["tasks"]["backup"]["last_success"].is_string(), "{v}");
    assert_eq!((&bad["ok"], &bad["tasks"]["backup"]["last_success"]), (&false.into(), &Value::Null), "{v}");
    assert!(bad["problems"][0].as_str().unwrap().starts_with("last backup ("), "{v}");
    let err = stderr(&r.run(&["health", "--max-age", "1h", "--config", cfg_s], 1));
    assert!(err.contains("unhealthy: job bad (tenant default): last backup"), "{err}");
    if r.cmd(&["verify-restore", "--help"]).status.success() {
        let prom_s = prom.to_str().unwrap();
        let v = r.json(&["agent", "run", "--config", cfg_s, "good", "--task", "drill", "--metrics-textfile", prom_s]);
        assert_eq!(v["ok"], true, "{v}");
        let text = std::fs::read_to_string(&prom).unwrap();
        assert!(sample(&text, r#"restore_duration_seconds{tenant="default",job="good"}"#).is_some(), "{text}");
    } else {
        eprintln!("skipping the drill: this build has no verify-restore command");
    }
}

#[test]
fn sigterm_interrupts_jobs_after_the_grace_period_and_commits_nothing() {
    let r = TestRepo::new();
    let state = r.path("state");
    let marker = r.path("started");
    // A stream that starts, then hangs far longer than the grace period.
    let script = format!("echo begin; touch {}; sleep 60; echo end", marker.display());
    let text = format!("[agent]\nstate_dir = {:?}\n\n", state.to_str().unwrap())
        + &stream_job(&r, "slow", &["sh", "-c", &script], "").replace("* * * * * *", "*/2 * * * * *");
    let cfg = write_config(&r, &text);
    let started = Instant::now();
    let mut agent = r
        .command(&["agent", "--config", cfg.to_str().unwrap(), "--grace", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stop = KillOnPanic(agent.id());
    while !marker.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "the job did not start");
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = agent.wait_with_output().unwrap();
    assert_code(&out, 1, "agent interrupted");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 interrupted"), "{out:?}");
    assert!(r.snapshots().is_empty(), "an interrupted backup committed a snapshot");
    let runs = std::fs::read_to_string(state.join("runs.jsonl")).unwrap();
    assert!(runs.contains(r#""ok":false"#), "{runs}");
    assert!(runs.contains(r#""exit_code":130"#), "an interrupted run records exit 130: {runs}");
    assert!(stderr(&out).contains("running=1"), "{}", stderr(&out));
}

/// Starts `agent --config cfg` with its output captured.
fn spawn_agent(r: &TestRepo, cfg: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["agent", "--config", cfg.to_str().unwrap()];
    args.extend(extra);
    r.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// SIGTERM to the agent; its output once it has stopped.
fn stop_agent(agent: Child) -> std::process::Output {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = agent.wait_with_output().unwrap();
    assert_code(&out, 0, "agent");
    out
}

/// Polls `cond` every 50 ms for up to 20 s while the agent runs.
fn wait_until(agent: &mut Child, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited early");
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The run records of a state directory, one JSON value each.
fn runs(state: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(state.join("runs.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn runs_of(state: &Path, job: &str, task: &str) -> Vec<Value> {
    runs(state).into_iter().filter(|r| r["job"] == job && r["task"] == task).collect()
}

#[test]
fn a_task_due_while_its_job_is_busy_runs_once_when_the_job_is_free() {
    let r = TestRepo::new();
    let state = r.path("state");
    let (started, hold) = (r.path("started"), r.path("hold"));
    std::fs::write(&hold, b"").unwrap();
    // The backup runs until the test removes `hold`.
    let script =
        format!("touch {}; while [ -e {} ]; do sleep 0.05; done; echo data", started.display(), hold.display());
    // The check fires on three consecutive seconds while the backup holds
    // the job, then not again for most of a minute.
    let first = (jiff::Timestamp::now().as_second() + 3).rem_euclid(60);
    let seconds: Vec<String> = (0..3).map(|i| ((first + i) % 60).to_string()).collect();
    let check = format!("check_schedule = \"{} * * * * *\"", seconds.join(","));
    let prom = r.path("agent.prom");
    let text = format!("[agent]\nstate_dir = {:?}\n\n", state.to_str().unwrap())
        + &stream_job(&r, "busy", &["sh", "-c", &script], &check);
    let cfg = write_config(&r, &text);
    let mut agent = spawn_agent(&r, &cfg, &["--metrics-textfile", prom.to_str().unwrap()]);
    let _stop = KillOnPanic(agent.id());
    wait_until(&mut agent, "the backup started", || started.exists());
    // Past the check's three firings (a clock, not a race: the firings are
    // what this test is about).
    let past = jiff::Timestamp::now().as_second() + 6;
    wait_until(&mut agent, "the check's firings passed", || jiff::Timestamp::now().as_second() > past);
    assert!(runs_of(&state, "busy", "check").is_empty(), "the check ran while the backup held the job");
    std::fs::remove_file(&hold).unwrap();
    wait_until(&mut agent, "the delayed check ran", || !runs_of(&state, "busy", "check").is_empty());
    let out = stop_agent(agent);
    let log = stderr(&out);
    assert!(log.contains("due while the job is busy: runs when it is free"), "{log}");
    assert!(!log.contains("skipped"), "{log}");
    let checks = runs_of(&state, "busy", "check");
    assert_eq!(checks.len(), 1, "three firings while busy, one run: {checks:?}");
    assert_eq!(checks[0]["ok"], true, "{checks:?}");
    let first_backup = &runs_of(&state, "busy", "backup")[0];
    let end = first_backup["start"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap().as_millisecond() as f64
        / 1000.0
        + first_backup["duration_seconds"].as_f64().unwrap();
    let check_start = checks[0]["start"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
    assert!(check_start.as_millisecond() as f64 / 1000.0 >= end, "the check started before the backup ended");
    let text = std::fs::read_to_string(&prom).unwrap();
    let series = r#"agent_tasks_delayed_total{tenant="default",job="busy",task="check"}"#;
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
}

#[test]
fn a_task_missed_while_the_agent_was_down_runs_at_start_up() {
    let r = TestRepo::new();
    let state = r.path("state");
    std::fs::create_dir_all(&state).unwrap();
    // "missed" last ran long ago; its schedule (yearly) fired since. "new"
    // has never run: nothing was missed, it waits for its schedule.
    let old = r#"{"job":"missed","tenant":"default","task":"backup","start":"2020-01-01T00:00:00Z","duration_seconds":1.0,"ok":true,"exit_code":0,"snapshots":[],"error":null}"#;
    std::fs::write(state.join("runs.jsonl"), format!("{old}\n")).unwrap();
    let text = format!("[agent]\nstate_dir = {:?}\n\n", state.to_str().unwrap())
        + &stream_job(&r, "missed", &["echo", "one"], "").replace("* * * * * *", "0 0 1 1 *")
        + &stream_job(&r, "new", &["echo", "two"], "").replace("* * * * * *", "0 0 1 1 *");
    let cfg = write_config(&r, &text);
    let mut agent = spawn_agent(&r, &cfg, &["--json"]);
    let _stop = KillOnPanic(agent.id());
    wait_until(&mut agent, "the missed backup ran", || runs_of(&state, "missed", "backup").len() == 2);
    let out = stop_agent(agent);
    let log = stderr(&out);
    assert!(log.contains("missed while the agent was down: runs now"), "{log}");
    // Nothing ran at shutdown: the log counts no running job.
    assert!(log.contains("running=0"), "{log}");
    assert!(runs_of(&state, "new", "backup").is_empty(), "a job that never ran was run at start-up");
    assert_eq!(runs_of(&state, "missed", "backup")[1]["ok"], true);
    assert_eq!(r.snapshots().len(), 1);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["caught_up"].as_u64(), summary["runs"].as_u64()), (Some(1), Some(1)), "{summary}");
}

#[test]
fn hooks_run_around_a_backup_and_a_failing_before_hook_stops_it() {
    let r = TestRepo::new();
    let (seen, failed) = (r.path("seen"), r.path("failed"));
    // `after` writes its environment and stdin; `on_failure` its exit code.
    let after = format!(
        "{{ echo \"$STRONGROOM_JOB $STRONGROOM_TENANT $STRONGROOM_TASK $STRONGROOM_EXIT_CODE \
         $STRONGROOM_SNAPSHOT_ID pw=${{STRONGROOM_PASSWORD:-none}}\"; cat; }} > {}",
        seen.display()
    );
    let on_failure = format!("{{ echo \"$STRONGROOM_EXIT_CODE\"; cat; }} > {}", failed.display());
    let hooks = |before: &str| {
        format!(
            "before = [\"sh\", \"-c\", {before:?}]\nafter = [\"sh\", \"-c\", {after:?}]\n\
             on_failure = [\"sh\", \"-c\", {on_failure:?}]"
        )
    };
    let text = stream_job(&r, "good", &["echo", "data"], &hooks("echo preparing; cat >/dev/null"))
        + &stream_job(&r, "blocked", &["echo", "data"], &hooks("echo cannot stop the service >&2; exit 4"));
    let cfg = write_config(&r, &text);
    let cfg_s = cfg.to_str().unwrap();

    let v = r.json(&["agent", "run", "--config", cfg_s, "good"]);
    assert_eq!(v["ok"], true, "{v}");
    let id = v["snapshots"][0].as_str().unwrap();
    let text = std::fs::read_to_string(&seen).unwrap();
    let (env, stdin) = text.split_once('\n').unwrap();
    assert_eq!(env, format!("good default backup 0 {id} pw=none"));
    let rec: Value = serde_json::from_str(stdin).unwrap();
    assert_eq!((&rec["ok"], &rec["snapshots"][0]), (&Value::Bool(true), &Value::String(id.into())), "{rec}");
    assert!(!failed.exists(), "on_failure ran after a success");

    // A failing `before`: no backup, the run fails, on_failure runs.
    std::fs::remove_file(&seen).unwrap();
    let out = r.run(&["agent", "run", "--config", cfg_s, "blocked"], 1);
    assert!(stderr(&out).contains("before hook failed, task not run"), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot stop the service"), "{}", stderr(&out));
    assert_eq!(r.snapshots().len(), 1, "the backup ran although its before hook failed");
    assert!(!seen.exists(), "after ran after a failure");
    let text = std::fs::read_to_string(&failed).unwrap();
    let (code, stdin) = text.split_once('\n').unwrap();
    assert_eq!(code, "1");
    let rec: Value = serde_json::from_str(stdin).unwrap();
    assert_eq!(rec["ok"], false, "{rec}");
}

/// A tiny HTTP server on 127.0.0.1: answers 500 to the first request and
/// 200 to the others, and keeps every request body.
fn webhook_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let status = if n == 0 { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if n > 0 {
                seen.lock().unwrap().push(String::from_utf8_lossy(&body).to_string());
            }
        }
    });
    (url, bodies)
}

#[test]
fn failures_and_recoveries_are_notified_once_by_webhook_and_sendmail() {
    let r = TestRepo::new();
    let (url, bodies) = webhook_server();
    let (fail, mail) = (r.path("fail"), r.path("mail"));
    let sendmail = r.path("sendmail.sh");
    std::fs::write(&sendmail, format!("#!/bin/sh\n{{ echo \"argv: $*\"; cat; echo; }} >> {}\n", mail.display()))
        .unwrap();
    std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let source = format!("if [ -e {} ]; then exit 5; fi; echo ok", fail.display());
    // The state lives in runs.jsonl: each `agent run` is a new process.
    let text = format!(
        "[agent]\nstate_dir = {:?}\n[agent.notify]\nwebhook = {url:?}\nsendmail = [{:?}, \"-t\"]\n\
         email_to = [\"ops@example.com\"]\nemail_from = \"backup@example.com\"\n\n",
        r.path("state").to_str().unwrap(),
        sendmail.to_str().unwrap()
    ) + &stream_job(&r, "flaky", &["sh", "-c", &source], "");
    let cfg = write_config(&r, &text);
    let cfg_s = cfg.to_str().unwrap();
    let run = |ok: bool| {
        let out = r.run(&["agent", "run", "--config", cfg_s, "flaky"], if ok { 0 } else { 1 });
        stderr(&out)
    };
    run(true); // first success: nothing to say
    std::fs::write(&fail, b"").unwrap();
    run(false); // failure: notified (after one retry of the webhook)
    run(false); // still failing: not again
    std::fs::remove_file(&fail).unwrap();
    run(true); // recovery: notified
    run(true);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let events: Vec<Value> = bodies.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    assert_eq!(
        (&events[0]["event"], &events[0]["ok"], &events[0]["exit_code"]),
        (&"failure".into(), &false.into(), &1.into())
    );
    assert_eq!(
        (&events[1]["event"], &events[1]["ok"], &events[1]["job"]),
        (&"recovery".into(), &true.into(), &"flaky".into())
    );
    let mail = std::fs::read_to_string(&mail).unwrap();
    assert_eq!(mail.matches("argv: -t").count(), 2, "{mail}");
    assert!(
        mail.contains("To: ops@example.com\nFrom: backup@example.com\nSubject: strongroom: job flaky backup FAILED\n"),
        "{mail}"
    );
    assert!(mail.contains("Subject: strongroom: job flaky backup recovered"), "{mail}");
}

#[test]
fn hooks_sendmail_and_steps_get_no_secret_of_the_agent() {
    let r = TestRepo::new();
    let (fail, hook_env, mail_env) = (r.path("fail"), r.path("hook.env"), r.path("mail.env"));
    let sendmail = r.path("sendmail.sh");
    std::fs::write(&sendmail, format!("#!/bin/sh\nenv > {}\ncat >/dev/null\n", mail_env.display())).unwrap();
    std::fs::set_permissions(&sendmail, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dump = format!("env > {}", hook_env.display());
    let src_env = r.path("source.env");
    let source = format!("env > {}; if [ -e {} ]; then exit 5; fi; echo ok", src_env.display(), fail.display());
    let hooks = format!("after = [\"sh\", \"-c\", {dump:?}]\non_failure = [\"sh\", \"-c\", {dump:?}]");
    // Both jobs' passwords are in the agent's environment (an escrow
    // secret file would beat such a password in a step).
    let from_env = |job: String, var: &str| {
        job.replace(
            &format!("password_file = {:?}", password_file(&r).to_str().unwrap()),
            &format!("password_env = {var:?}"),
        )
    };
    let text = format!(
        "[agent]\n[agent.notify]\nsendmail = [{:?}]\nemail_to = [\"ops@example.com\"]\n\n",
        sendmail.to_str().unwrap()
    ) + &from_env(stream_job(&r, "mine", &["sh", "-c", &source], &hooks), "MINE_PW")
        + &from_env(stream_job(&r, "other", &["echo", "x"], ""), "OTHER_PW");
    let cfg = write_config(&r, &text);
    let escrow = r.path("escrow");
    std::fs::write(&escrow, b"not an escrow secret\n").unwrap();
    let run = |code: i32| {
        let out = r
            .command(&["agent", "run", "--config", cfg.to_str().unwrap(), "mine"])
            .env("MINE_PW", PASSWORD)
            .env("OTHER_PW", "other-tenant-secret")
            .env("STRONGROOM_ESCROW_SECRET_FILE", &escrow)
            .env("STRONGROOM_NEW_PASSWORD", "new-secret")
            .env("AWS_SECRET_ACCESS_KEY", "cloud-secret")
            .env("LC_ALL", "C")
            .output()
            .unwrap();
        assert_code(&out, code, "agent run");
    };
    // A failure: on_failure runs, and sendmail says so.
    std::fs::write(&fail, b"").unwrap();
    run(1);
    for file in [&hook_env, &mail_env] {
        let env = std::fs::read_to_string(file).unwrap();
        for secret in
            ["MINE_PW", "OTHER_PW", "STRONGROOM_ESCROW", "STRONGROOM_NEW_PASSWORD", "STRONGROOM_PASSWORD", "AWS_"]
        {
            assert!(!env.contains(secret), "{secret} reached {}:\n{env}", file.display());
        }
        assert!(env.contains("PATH=") && env.contains("LC_ALL=C"), "{env}");
    }
    assert!(std::fs::read_to_string(&hook_env).unwrap().contains("STRONGROOM_JOB=mine"));
    // The steps open the tenant with the job's password, not with the
    // escrow secret file of the agent's environment.
    std::fs::remove_file(&fail).unwrap();
    run(0);
    assert_eq!(r.snapshots().len(), 1);
    // The job's stream command sees neither its own job's password nor
    // another job's.
    let env = std::fs::read_to_string(&src_env).unwrap();
    for secret in ["MINE_PW", "OTHER_PW", "STRONGROOM_PASSWORD", "STRONGROOM_ESCROW"] {
        assert!(!env.contains(secret), "{secret} reached the stream command:\n{env}");
    }
}

/// An HTTP server on 127.0.0.1 that answers every request with a 307 to
/// a second listener; returns its URL (with `path`), its request count,
/// and the second listener's connection count.
fn redirecting_server(path: &str) -> (String, std::sync::Arc<AtomicUsize>, std::sync::Arc<AtomicUsize>) {
    let (first, second) =
        (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let url = format!("http://{}{path}", first.local_addr().unwrap());
    let target = format!("http://{}/elsewhere", second.local_addr().unwrap());
    let (asked, followed) = (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicUsize::new(0)));
    let (a, f) = (asked.clone(), followed.clone());
    std::thread::spawn(move || {
        for stream in second.incoming().flatten() {
            f.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    std::thread::spawn(move || {
        for mut stream in first.incoming().flatten() {
            let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) > 0 && line != "\r\n" {
                line.clear();
            }
            a.fetch_add(1, Ordering::SeqCst);
            let _ = write!(stream, "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, asked, followed)
}

#[test]
fn the_webhook_follows_no_redirect_and_its_url_is_not_logged() {
    let r = TestRepo::new();
    let (url, asked, followed) = redirecting_server("/hook/TOKEN-IN-PATH");
    let text =
        format!("[agent]\n[agent.notify]\nwebhook = {url:?}\n\n") + &stream_job(&r, "j", &["sh", "-c", "exit 5"], "");
    let cfg = write_config(&r, &text);
    let out = r.run(&["agent", "run", "--config", cfg.to_str().unwrap(), "j"], 1);
    let log = stderr(&out);
    assert!(log.contains("webhook notification failed") && log.contains("HTTP 307"), "{log}");
    assert!(!log.contains("TOKEN-IN-PATH"), "{log}");
    assert_eq!(asked.load(Ordering::SeqCst), 3, "three attempts");
    assert_eq!(followed.load(Ordering::SeqCst), 0, "the redirect was followed");
}

// ---------------------------------------------------------------------------
// PostgreSQL end to end.

/// Debian's PostgreSQL binaries: the newest /usr/lib/postgresql/<ver>/bin
/// with everything the test runs.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, b)| {
            ["initdb", "pg_ctl", "postgres", "pgbench", "psql", "pg_dump"].iter().all(|t| b.join(t).exists())
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// A PostgreSQL server on a unix socket in a temp dir, stopped on drop.
struct Pg {
    bin: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    /// Run the server as this user (when the tests run as root).
    user: Option<String>,
}

impl Pg {
    fn start(dir: &Path) -> Result<Pg, String> {
        let bin = pg_bin().ok_or("no PostgreSQL under /usr/lib/postgresql (.ci/run installs postgresql)")?;
        let root = nix::unistd::geteuid().is_root();
        let user = if root {
            nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or("running as root and there is no postgres user to run the server as")?;
            Some("postgres".to_string())
        } else {
            None
        };
        let base = dir.join("pg");
        let (data, sock) = (base.join("data"), base.join("sock"));
        std::fs::create_dir_all(&sock).unwrap();
        if let Some(u) = &user {
            // The server's user must reach its directories.
            let pw = nix::unistd::User::from_name(u).unwrap().unwrap();
            for d in [&base, &sock] {
                nix::unistd::chown(d, Some(pw.uid), Some(pw.gid)).unwrap();
            }
            let mut p = dir.to_path_buf();
            loop {
                let mode = std::fs::metadata(&p).unwrap().permissions();
                use std::os::unix::fs::PermissionsExt;
                if mode.mode() & 0o001 == 0 {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode.mode() | 0o711)).unwrap();
                }
                if !p.pop() || p.as_os_str().is_empty() || p == Path::new("/") {
                    break;
                }
            }
        }
        let pg = Pg { bin, data, sock, user };
        let out = pg
            .as_server(&["initdb", "-D", pg.data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"])
            .output()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let opts = format!("-k {} -c listen_addresses='' -c fsync=off -c full_page_writes=off", pg.sock.display());
        let log = base.join("log");
        let out = pg
            .as_server(&[
                "pg_ctl",
                "-D",
                pg.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ])
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("pg_ctl start failed: {}\n{log}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(pg)
    }

    /// A server-side tool, run as the server's user.
    fn as_server(&self, argv: &[&str]) -> Command {
        let tool = self.bin.join(argv[0]);
        let mut c = match &self.user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(tool);
                c
            }
            None => Command::new(tool),
        };
        c.args(&argv[1..]).stdin(Stdio::null());
        c
    }

    /// Connection options for client tools.
    fn conn(&self) -> Vec<String> {
        vec!["-h".into(), self.sock.display().to_string(), "-U".into(), "postgres".into()]
    }

    fn client(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        c.args(self.conn());
        c
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .client("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The contents of the pgbench tables and the state marker.
    fn digest(&self, db: &str) -> String {
        self.psql(
            db,
            "SELECT (SELECT n FROM state) || ' ' || \
             (SELECT md5(string_agg(a::text, ',' ORDER BY aid)) FROM pgbench_accounts a) || ' ' || \
             (SELECT md5(string_agg(b::text, ',' ORDER BY bid)) FROM pgbench_branches b) || ' ' || \
             (SELECT md5(string_agg(t::text, ',' ORDER BY tid)) FROM pgbench_tellers t)",
        )
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = self.as_server(&["pg_ctl", "-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of one sample (`name{labels}`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn snapshots_of(r: &TestRepo, path: &str) -> Vec<Value> {
    r.snapshots().into_iter().filter(|s| s["paths"][0] == path).collect()
}

/// Waits for a snapshot of `path` taken after `after` (RFC 3339); returns it.
fn wait_for_snapshot_after(r: &TestRepo, agent: &mut Child, path: &str, after: &jiff::Timestamp) -> Value {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if let Some(s) = snapshots_of(r, path)
            .into_iter()
            .find(|s| s["time"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap() > *after)
        {
            return s;
        }
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited early");
        assert!(Instant::now() < deadline, "no snapshot of {path} after {after} within 25 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn postgres_dumps_on_schedule_restore_a_chosen_point() {
    let r = TestRepo::new();
    let pg = match Pg::start(r.dir.path()) {
        Ok(pg) => pg,
        Err(why) => {
            eprintln!("skipping the PostgreSQL end-to-end test: {why}");
            return;
        }
    };
    let started = Instant::now();
    pg.psql("postgres", "CREATE DATABASE bench");
    let out = pg.client("pgbench").args(["-i", "-s", "1", "-q", "-d", "bench"]).output().unwrap();
    assert!(out.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&out.stderr));
    pg.psql("bench", "CREATE TABLE state (n int); INSERT INTO state VALUES (0)");

    let mut dump = vec![pg.bin.join("pg_dump").display().to_string()];
    dump.extend(pg.conn());
    dump.push("bench".into());
    let dump: Vec<&str> = dump.iter().map(|s| s.as_str()).collect();
    let state = r.path("state");
    let mut text = format!(
        "[agent]\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = {:?}\ncache_dir = {:?}\nmax_concurrent = 2\n\n",
        state.to_str().unwrap(),
        r.path("agent-cache").to_str().unwrap()
    );
    text += &stream_job(&r, "db", &dump, "tags = [\"pg\"]");
    // The failing job takes its password from the environment.
    text += &stream_job(&r, "broken", &["sh", "-c", "echo partial; exit 7"], "").replace(
        &format!("password_file = {:?}", password_file(&r).to_str().unwrap()),
        "password_env = \"SR_TEST_PW\"",
    );
    let cfg = write_config(&r, &text);
    let mut agent = r
        .command(&["agent", "--config", cfg.to_str().unwrap(), "--grace", "20s", "-v"])
        .env("SR_TEST_PW", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stop = KillOnPanic(agent.id());

    // States 0, 1, 2: each committed, then waited for in a snapshot that
    // started after the commit (and so holds exactly that state, since the
    // next change waits for the snapshot to be saved).
    let mut digests = Vec::new();
    let mut chosen = Vec::new();
    for n in 0..3 {
        if n > 0 {
            pg.psql(
                "bench",
                &format!(
                    "BEGIN; UPDATE pgbench_accounts SET abalance = abalance + {n} * 7 WHERE aid % 97 = {n}; \
                     UPDATE pgbench_tellers SET tbalance = tbalance - {n}; UPDATE state SET n = {n}; COMMIT"
                ),
            );
        }
        digests.push(pg.digest("bench"));
        let committed = jiff::Timestamp::now();
        chosen.push(wait_for_snapshot_after(&r, &mut agent, "/db.out", &committed));
    }
    assert_ne!(digests[0], digests[1]);

    // Metrics from the running agent.
    let addr = std::fs::read_to_string(state.join("metrics-address")).unwrap();
    let db = r#"{tenant="default",job="db"}"#;
    // The snapshot is committed before its child exits and the agent
    // counts the run: wait for the count to catch up.
    let mut text = http_get(addr.trim(), "/metrics");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sample(&text, &format!("backup_success_total{db}")).unwrap_or(0.0) < 3.0
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        text = http_get(addr.trim(), "/metrics");
    }
    let broken = r#"{tenant="default",job="broken"}"#;
    assert!(sample(&text, &format!("backup_success_total{db}")).unwrap() >= 3.0, "{text}");
    assert!(sample(&text, &format!("backup_failure_total{broken}")).unwrap() >= 1.0, "{text}");
    assert_eq!(sample(&text, &format!("backup_success_total{broken}")), Some(0.0), "{text}");
    assert!(sample(&text, &format!("backup_size_bytes{db}")).unwrap() > 1e6, "{text}");
    assert!(sample(&text, &format!("last_success_timestamp_seconds{db}")).unwrap() > 1.7e9, "{text}");
    assert!(sample(&text, &format!("repository_stored_bytes{db}")).unwrap() > 0.0, "{text}");
    assert!(sample(&text, &format!("dedup_ratio{db}")).unwrap() > 0.0, "{text}");

    // SIGTERM: running jobs finish, the agent exits 0.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the agent did not stop within 30 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = agent.wait_with_output().unwrap();
    assert_code(&out, 0, "agent");
    let log = stderr(&out);
    assert!(log.contains("run failed") && log.contains("exit status: 7"), "{log}");
    assert!(snapshots_of(&r, "/broken.out").is_empty(), "a failing source command made a snapshot");
    let runs = std::fs::read_to_string(state.join("runs.jsonl")).unwrap();
    assert!(runs.lines().any(|l| l.contains(r#""job":"broken""#) && l.contains(r#""ok":false"#)), "{runs}");

    // Restore the chosen points (state 1 by time, and the newest) into
    // fresh databases with `dump | psql` and compare.
    for (n, at) in [(1, chosen[1]["time"].as_str().unwrap().to_string()), (2, String::new())] {
        let db = format!("restored{n}");
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        let mut args = vec!["dump", "latest", "/db.out"];
        if !at.is_empty() {
            args.extend(["--at", &at]);
        }
        let mut dumper = r.command(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let psql = pg
            .client("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &db])
            .stdin(dumper.stdout.take().unwrap())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        let dumped = dumper.wait_with_output().unwrap();
        assert_code(&dumped, 0, "strongroom dump");
        assert!(psql.status.success(), "psql restore: {}", String::from_utf8_lossy(&psql.stderr));
        assert_eq!(pg.digest(&db), digests[n], "restored state {n} differs");
    }
    eprintln!("postgres end to end: {:.1}s", started.elapsed().as_secs_f64());
}

/// Kills an agent the test started if the test fails before stopping it
/// (a failed assertion must not leave it running its jobs every second).
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn an_agent_run_unwraps_the_key_slot_once_and_hands_the_key_to_its_steps() {
    let r = TestRepo::new();
    let (src_env, src_stdin) = (r.path("source.env"), r.path("source.stdin"));
    let (step_env, step_cmdline) = (r.path("step.env"), r.path("step.cmdline"));
    // The stream command's parent is the backup step itself.
    let source = format!(
        "env > {}; cat > {}; cat /proc/$PPID/environ > {}; cat /proc/$PPID/cmdline > {}; echo ok",
        src_env.display(),
        src_stdin.display(),
        step_env.display(),
        step_cmdline.display()
    );
    let cfg = write_config(&r, &stream_job(&r, "db", &["sh", "-c", &source], "plan = \"basic\""));
    let out = r
        .command(&["agent", "run", "--config", cfg.to_str().unwrap(), "db"])
        .env("STRONGROOM_LOG", "strongroom=debug")
        .output()
        .unwrap();
    assert_code(&out, 0, "agent run");
    let err = stderr(&out);
    // The agent's own derivation; each step (backup, forget, stats) opens
    // with the key it was handed and derives nothing.
    assert_eq!(err.matches("unwrapped (argon2)").count(), 1, "{err}");
    let handed = err.lines().filter(|l| l.contains("child: ") && l.contains("handed-over key")).count();
    assert_eq!(handed, 3, "{err}");
    assert!(err.contains("tenant key read from fd 0"), "{err}");
    assert_eq!(r.snapshots().len(), 1);
    // Neither the stream command's environment nor its standard input
    // holds the key or the password.
    let env = std::fs::read_to_string(&src_env).unwrap();
    assert!(!env.contains("PASSWORD") && !env.contains(PASSWORD), "{env}");
    assert_eq!(std::fs::read(&src_stdin).unwrap(), b"", "the stream command read something on stdin");
    // Nor the step's own environment and command line.
    let (_, key) = only_slot(&r);
    let cmdline = std::fs::read(&step_cmdline).unwrap();
    assert!(cmdline.windows(11).any(|w| w == b"--key-fd\x000\x00"), "{}", String::from_utf8_lossy(&cmdline));
    for file in [&step_env, &step_cmdline] {
        let bytes = std::fs::read(file).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("PASSWORD") && !text.contains(PASSWORD), "{}: {text}", file.display());
        assert!(!bytes.windows(32).any(|w| w == key), "the key is in {}", file.display());
    }
    // The audit log names the kind of slot the agent opened.
    let entries = r.json(&["audit", "export"]);
    let backup = entries.as_array().unwrap().iter().find(|e| e["command"] == "backup").unwrap().clone();
    assert_eq!(backup["opened_with"], "password", "{entries}");
}

/// The key handoff `--key-fd` reads: `SRKH`, version 1, the key, the
/// slot name's length and the slot name.
fn handoff(key: &[u8], slot: &str) -> Vec<u8> {
    let mut b = b"SRKH\x01".to_vec();
    b.extend_from_slice(key);
    b.push(slot.len() as u8);
    b.extend_from_slice(slot.as_bytes());
    b
}

/// The only key slot of the default tenant: its name and its master key.
fn only_slot(r: &TestRepo) -> (String, [u8; 32]) {
    use strongroom_format::codec::keyslot;
    let dir = r.repo.join("tenants/default/keys");
    let entry = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap();
    let slot = keyslot::decode(&std::fs::read(entry.path()).unwrap()).unwrap();
    let master = keyslot::unwrap(&slot, PASSWORD.as_bytes()).unwrap();
    let bytes = keyslot::encode_handoff(&master, "x").unwrap();
    (entry.file_name().to_string_lossy().into_owned(), bytes[5..37].try_into().unwrap())
}

#[test]
fn a_step_given_a_wrong_short_or_long_key_on_its_key_fd_fails_as_a_wrong_password() {
    let r = TestRepo::new();
    let (slot, key) = only_slot(&r);
    let with_stdin = |input: std::fs::File| {
        let mut c = r.command(&["--key-fd", "0", "snapshots"]);
        c.env_remove("STRONGROOM_PASSWORD").stdin(input);
        c.output().unwrap()
    };
    let with_key = |bytes: &[u8]| {
        let f = r.path("key");
        std::fs::write(&f, bytes).unwrap();
        with_stdin(std::fs::File::open(&f).unwrap())
    };
    // The right key opens, without a password.
    let out = with_key(&handoff(&key, &slot));
    assert_code(&out, 0, "snapshots with the key");
    let mut wrong = key;
    wrong[0] ^= 1;
    let mut long = handoff(&key, &slot);
    long.push(0);
    let full = handoff(&key, &slot);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("wrong key", handoff(&wrong, &slot), "not the key of tenant default"),
        ("short", full[..20].to_vec(), "truncated"),
        ("long", long, "trailing bytes"),
        ("empty", Vec::new(), "truncated"),
        ("no such slot", handoff(&key, "0000"), "no password or key-file slot 0000"),
    ];
    for (what, bytes, says) in cases {
        let out = with_key(&bytes);
        assert_code(&out, 12, what);
        let err = stderr(&out);
        assert!(err.contains("key given with --key-fd") && err.contains(says), "{what}: {err}");
    }
    // A directory, or a descriptor that is not open, carries no key.
    let out = with_stdin(std::fs::File::open(r.dir.path()).unwrap());
    assert_code(&out, 12, "a directory");
    assert!(stderr(&out).contains("not a pipe or a regular file"), "{}", stderr(&out));
    let out = r.command(&["--key-fd", "9", "snapshots"]).env_remove("STRONGROOM_PASSWORD").output().unwrap();
    assert_code(&out, 12, "fd 9");
    assert!(stderr(&out).contains("fd 9"), "{}", stderr(&out));
}
