//! The agent: configuration errors with positions, `agent run`, and the end
//! to end run against a real PostgreSQL (pg_dump streamed on a one-second
//! schedule, database changed between runs, a chosen snapshot restored
//! with `dump | psql` and compared; metrics scraped over HTTP; a failing
//! source command makes a failure metric and no snapshot).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
    // health over every tenant of the configuration sees that check.
    let v = r.json(&["health", "--max-age", "1h", "--config", cfg_s]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1, "one (repository, tenant) pair: {v}");
    assert_eq!(v["tenants"][0]["last_check"]["ok"], true, "{v}");
    if r.cmd(&["verify-restore", "--help"]).status.success() {
        let v = r.json(&["agent", "run", "--config", cfg_s, "good", "--task", "drill"]);
        assert_eq!(v["ok"], true, "{v}");
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
