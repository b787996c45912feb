//! The agent's TOML configuration: parsing with positions, validation, and
//! schedules (cron with a time zone).
//!
//! Pure: reads no files and no environment. [`parse`] returns every error
//! it finds, each with the line and column it refers to: unknown keys are
//! found in a first pass over the parsed document (serde's
//! `deny_unknown_fields` would stop at the first), then every value is
//! checked.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use croner::parser::{CronParser, Seconds};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::Zoned;
use serde::Deserialize;
use toml::Spanned;

use super::Task;
use crate::id::TenantName;
use crate::retention::Plan;
use crate::units::{parse_duration, parse_percent};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The `[agent]` table.
    pub agent: AgentSettings,
    /// The jobs, in file order.
    pub jobs: Vec<Job>,
}

/// Settings of the agent itself (`[agent]`); command-line options win.
#[derive(Debug, Clone, Default)]
pub struct AgentSettings {
    /// Jobs run at the same time at most (default 2).
    pub max_concurrent: usize,
    /// Metrics endpoint, e.g. `127.0.0.1:9184`.
    pub metrics_listen: Option<String>,
    /// Where run records are kept.
    pub state_dir: Option<PathBuf>,
    /// Catalog cache directory for the jobs' commands.
    pub cache_dir: Option<PathBuf>,
    /// How long running jobs may finish after SIGTERM.
    pub grace: Option<Duration>,
    /// How long a job's command waits for a repository lock (default 5m).
    pub lock_wait: Duration,
    /// Where failures and recoveries are sent, for jobs without their own
    /// `notify` table.
    pub notify: Notify,
}

/// Where a job's failures and recoveries are sent (`notify` tables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notify {
    /// A URL the run record is POSTed to as JSON.
    pub webhook: Option<String>,
    /// Time for one webhook attempt (default 10s).
    pub webhook_timeout: Duration,
    /// argv of a sendmail-compatible program that reads a message on stdin.
    pub sendmail: Vec<String>,
    /// Recipients of the email.
    pub email_to: Vec<String>,
    /// `From:` of the email, if given (else sendmail's default).
    pub email_from: Option<String>,
}

impl Notify {
    /// True when there is nowhere to send anything.
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.sendmail.is_empty()
    }
}

/// Commands run around a job's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Runs before the task; if it fails, the task does not run.
    pub before: Vec<String>,
    /// Runs after a task that succeeded.
    pub after: Vec<String>,
    /// Runs after a task that failed (the `before` hook's failure included).
    pub on_failure: Vec<String>,
    /// The tasks the hooks run around (default: backup).
    pub tasks: Vec<Task>,
    /// Time a hook may take before it is killed (default 5m).
    pub timeout: Duration,
}

/// Where a job's password comes from; never the config text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file whose content (without a trailing newline) is the password.
    File(PathBuf),
    /// An environment variable of the agent.
    Env(String),
}

impl PasswordSource {
    /// The password, read as a step reads it (a file without its
    /// trailing line breaks, a variable's raw bytes).
    pub fn secret(&self) -> Result<crate::keyslots::Secret, String> {
        let bytes = match self {
            PasswordSource::File(f) => {
                crate::keyslots::read_secret_file(f).map_err(|e| format!("reading {}: {e}", f.display()))?.to_vec()
            }
            PasswordSource::Env(var) => {
                use std::os::unix::ffi::OsStringExt as _;
                std::env::var_os(var).ok_or_else(|| format!("environment variable {var} is not set"))?.into_vec()
            }
        };
        Ok(crate::keyslots::Secret::new(bytes))
    }
}

/// One scheduled job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Unique name (the `job` label).
    pub name: String,
    /// Tenant.
    pub tenant: TenantName,
    /// Repository URL.
    pub repository: String,
    /// S3 endpoint for the repository, if any.
    pub s3_endpoint: Option<String>,
    /// Password source.
    pub password: PasswordSource,
    /// When to back up.
    pub schedule: Schedule,
    /// Directory sources.
    pub paths: Vec<PathBuf>,
    /// A stream source: argv of the command.
    pub command: Vec<String>,
    /// File name of the stream.
    pub stdin_name: String,
    /// Exclude globs for `paths`.
    pub exclude: Vec<String>,
    /// Snapshot tags.
    pub tags: Vec<String>,
    /// Host name recorded in snapshots (default: this machine's).
    pub host: Option<String>,
    /// Retention plan applied after a successful backup.
    pub plan: Option<Plan>,
    /// When to prune.
    pub prune_schedule: Option<Schedule>,
    /// When to check.
    pub check_schedule: Option<Schedule>,
    /// Share of packs a scheduled check reads (percent; 0 reads none).
    pub check_subset: f64,
    /// When to run a restore drill.
    pub drill_schedule: Option<Schedule>,
    /// `before`, `after` and `on_failure` commands.
    pub hooks: Hooks,
    /// Where failures and recoveries go (the job's table, else the agent's).
    pub notify: Notify,
}

/// A cron expression evaluated in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The expression as written.
    pub text: String,
    cron: Cron,
    tz: TimeZone,
}

impl Schedule {
    /// Parses 5 fields (minute first) or 6 (seconds first), in `tz`.
    pub fn parse(text: &str, tz: TimeZone) -> Result<Self, String> {
        let n_fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && !(5..=6).contains(&n_fields) {
            return Err(format!(
                "invalid schedule {text:?}: use 5 cron fields (minute hour day month weekday) or 6 with seconds first"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|e| format!("invalid schedule {text:?}: {e}"))?;
        Ok(Self { text: text.to_string(), cron, tz })
    }

    /// The first time strictly after `after` (in the schedule's zone).
    pub fn next_after(&self, after: jiff::Timestamp) -> Option<Zoned> {
        self.cron.find_next_occurrence(&after.to_zoned(self.tz.clone()), false).ok()
    }
}

/// A problem in the configuration, with its place (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Line, from 1.
    pub line: usize,
    /// Column (in characters), from 1.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

// No `deny_unknown_fields`: `unknown_keys` reports every unknown key with
// its place before these are read, so each list below must name exactly
// the fields of its struct (the test `every_known_key_parses` uses them
// all).
const TOP_KEYS: &[&str] = &["agent", "job"];
const AGENT_KEYS: &[&str] =
    &["max_concurrent", "metrics_listen", "state_dir", "cache_dir", "grace", "lock_wait", "notify"];
const JOB_KEYS: &[&str] = &[
    "name",
    "tenant",
    "repository",
    "s3_endpoint",
    "password_file",
    "password_env",
    "schedule",
    "timezone",
    "paths",
    "command",
    "stdin_name",
    "exclude",
    "tags",
    "host",
    "plan",
    "prune_schedule",
    "check_schedule",
    "check_subset",
    "drill_schedule",
    "before",
    "after",
    "on_failure",
    "hook_tasks",
    "hook_timeout",
    "notify",
];
const NOTIFY_KEYS: &[&str] = &["webhook", "webhook_timeout", "sendmail", "email_to", "email_from"];

#[derive(Deserialize)]
struct FileConfig {
    #[serde(default)]
    agent: Option<Spanned<FileAgent>>,
    #[serde(default)]
    job: Vec<Spanned<FileJob>>,
}

#[derive(Deserialize, Default)]
struct FileAgent {
    max_concurrent: Option<Spanned<i64>>,
    metrics_listen: Option<Spanned<String>>,
    state_dir: Option<PathBuf>,
    cache_dir: Option<PathBuf>,
    grace: Option<Spanned<String>>,
    lock_wait: Option<Spanned<String>>,
    notify: Option<Spanned<FileNotify>>,
}

#[derive(Deserialize, Default)]
struct FileNotify {
    webhook: Option<Spanned<String>>,
    webhook_timeout: Option<Spanned<String>>,
    #[serde(default)]
    sendmail: Vec<Spanned<String>>,
    #[serde(default)]
    email_to: Vec<Spanned<String>>,
    email_from: Option<Spanned<String>>,
}

#[derive(Deserialize)]
struct FileJob {
    name: Spanned<String>,
    tenant: Spanned<String>,
    repository: Spanned<String>,
    s3_endpoint: Option<String>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    schedule: Spanned<String>,
    timezone: Option<Spanned<String>>,
    #[serde(default)]
    paths: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    command: Vec<String>,
    stdin_name: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    tags: Vec<String>,
    host: Option<String>,
    plan: Option<Spanned<String>>,
    prune_schedule: Option<Spanned<String>>,
    check_schedule: Option<Spanned<String>>,
    check_subset: Option<Spanned<String>>,
    drill_schedule: Option<Spanned<String>>,
    #[serde(default)]
    before: Vec<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    #[serde(default)]
    on_failure: Vec<Spanned<String>>,
    hook_tasks: Option<Vec<Spanned<String>>>,
    hook_timeout: Option<Spanned<String>>,
    notify: Option<Spanned<FileNotify>>,
}

/// Parses and validates a configuration; on failure, every error found.
pub fn parse(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut errors = Errors { text, list: Vec::new() };
    unknown_keys(text, &mut errors);
    let file: FileConfig = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            errors.push(e.span().unwrap_or(0..0), e.message().trim_end());
            return Err(errors.sorted());
        }
    };
    let agent = agent_settings(file.agent.map(|s| s.into_inner()).unwrap_or_default(), &mut errors);
    let mut names = std::collections::HashSet::new();
    let mut jobs = Vec::new();
    for sj in file.job {
        jobs.extend(job(sj, &agent.notify, &mut names, &mut errors));
    }
    if errors.list.is_empty() {
        Ok(Config { agent, jobs })
    } else {
        Err(errors.sorted())
    }
}

/// Records every key the configuration does not know, at its place. A
/// document that does not parse is left to the deserializer to report.
fn unknown_keys(text: &str, errors: &mut Errors) {
    use toml::de::{DeTable, DeValue};
    fn check(table: &DeTable, known: &[&str], within: &str, errors: &mut Errors) {
        for key in table.keys() {
            if !known.contains(&key.get_ref().as_ref()) {
                let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
                let msg = format!("unknown field `{}`{within}, expected one of {}", key.get_ref(), expected.join(", "));
                errors.push(key.span(), msg);
            }
        }
        if let Some(DeValue::Table(t)) = table.get("notify").map(|v| v.get_ref()) {
            check(t, NOTIFY_KEYS, " in notify", errors);
        }
    }
    let Ok(root) = DeTable::parse(text) else { return };
    let root = root.get_ref();
    check(root, TOP_KEYS, "", errors);
    if let Some(DeValue::Table(t)) = root.get("agent").map(|v| v.get_ref()) {
        check(t, AGENT_KEYS, " in [agent]", errors);
    }
    if let Some(DeValue::Array(jobs)) = root.get("job").map(|v| v.get_ref()) {
        for j in jobs {
            if let DeValue::Table(t) = j.get_ref() {
                check(t, JOB_KEYS, " in [[job]]", errors);
            }
        }
    }
}

/// The errors found so far, each placed in the text it refers to.
struct Errors<'t> {
    text: &'t str,
    list: Vec<ConfigError>,
}

impl Errors<'_> {
    /// The errors in the order of the text.
    fn sorted(mut self) -> Vec<ConfigError> {
        self.list.sort_by_key(|e| (e.line, e.column));
        self.list.dedup();
        self.list
    }

    /// Records `message` at the start of `span`.
    fn push(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.text, span.start);
        self.list.push(ConfigError { line, column, message: message.into() });
    }

    /// The value of `r`; or `None`, its error recorded at `span`.
    fn ok<T, E: ToString>(&mut self, span: Range<usize>, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(span, e.to_string());
                None
            }
        }
    }
}

/// The `[agent]` table, defaults where a value is missing or wrong.
fn agent_settings(a: FileAgent, errors: &mut Errors) -> AgentSettings {
    let mut agent = AgentSettings {
        max_concurrent: 2,
        metrics_listen: a.metrics_listen.map(|s| s.into_inner()),
        state_dir: a.state_dir,
        cache_dir: a.cache_dir,
        grace: None,
        lock_wait: Duration::from_secs(300),
        notify: a.notify.map(|n| notify(n, errors)).unwrap_or_default(),
    };
    if let Some(m) = a.max_concurrent {
        match usize::try_from(*m.get_ref()) {
            Ok(n) if n >= 1 => agent.max_concurrent = n,
            _ => errors.push(m.span(), "max_concurrent must be at least 1"),
        }
    }
    if let Some(g) = a.grace {
        agent.grace = errors.ok(g.span(), parse_duration(g.get_ref()));
    }
    if let Some(w) = a.lock_wait {
        if let Some(d) = errors.ok(w.span(), parse_duration(w.get_ref())) {
            agent.lock_wait = d;
        }
    }
    agent
}

/// One `[[job]]`, checked field by field in file order; `None` (with the
/// errors recorded) when it cannot be used. `names`: the job names so far.
fn job(
    sj: Spanned<FileJob>,
    default_notify: &Notify,
    names: &mut std::collections::HashSet<String>,
    errors: &mut Errors,
) -> Option<Job> {
    let job_span = sj.span();
    let mut j = sj.into_inner();
    let name = j.name.get_ref().clone();
    // As `backup --job` checks it: the name goes into each snapshot.
    let max = crate::codec::snapshot::MAX_JOB_BYTES;
    if name.is_empty() || name.chars().any(|c| c.is_control() || c == '/') {
        errors.push(j.name.span(), format!("invalid job name {name:?}"));
    } else if name.len() > max {
        errors.push(j.name.span(), format!("job name is longer than {max} bytes ({} bytes)", name.len()));
    } else if !names.insert(name.clone()) {
        errors.push(j.name.span(), format!("job name {name:?} is used twice"));
    }
    let tenant = errors.ok(j.tenant.span(), TenantName::new(j.tenant.get_ref()));
    if j.repository.get_ref().is_empty() {
        errors.push(j.repository.span(), "repository is empty");
    }
    let password = password_source(j.password_file.take(), j.password_env.take(), &name, &job_span, errors);
    let tz = time_zone(j.timezone.as_ref(), errors);
    let mut schedule = |s: &Spanned<String>| errors.ok(s.span(), Schedule::parse(s.get_ref(), tz.clone()));
    let main_schedule = schedule(&j.schedule);
    let prune_schedule = j.prune_schedule.as_ref().and_then(&mut schedule);
    let check_schedule = j.check_schedule.as_ref().and_then(&mut schedule);
    let drill_schedule = j.drill_schedule.as_ref().and_then(&mut schedule);
    let stdin_name = check_sources(&j, &name, &job_span, errors);
    let plan = j.plan.as_ref().and_then(|p| errors.ok(p.span(), p.get_ref().parse::<Plan>()));
    let check_subset = match &j.check_subset {
        None => 0.0,
        Some(s) => errors.ok(s.span(), parse_percent(s.get_ref())).unwrap_or(0.0),
    };
    let hooks = hooks(&mut j, errors);
    let notify = j.notify.take().map(|n| notify(n, errors)).unwrap_or_else(|| default_notify.clone());
    Some(Job {
        name,
        tenant: tenant?,
        repository: j.repository.into_inner(),
        s3_endpoint: j.s3_endpoint,
        password: password?,
        schedule: main_schedule?,
        paths: j.paths.into_iter().map(|p| p.into_inner()).collect(),
        command: j.command,
        stdin_name,
        exclude: j.exclude.into_iter().map(|e| e.into_inner()).collect(),
        tags: j.tags,
        host: j.host,
        plan,
        prune_schedule,
        check_schedule,
        check_subset,
        drill_schedule,
        hooks,
        notify,
    })
}

/// An argv array: empty (no command) or a non-empty program name.
fn argv(list: &[Spanned<String>], what: &str, errors: &mut Errors) -> Vec<String> {
    if let Some(first) = list.first() {
        if first.get_ref().is_empty() {
            errors.push(first.span(), format!("{what}: the program name is empty"));
        }
    }
    list.iter().map(|a| a.get_ref().clone()).collect()
}

/// The job's hooks, their tasks and timeout.
fn hooks(j: &mut FileJob, errors: &mut Errors) -> Hooks {
    let mut h = Hooks {
        before: argv(&j.before, "before", errors),
        after: argv(&j.after, "after", errors),
        on_failure: argv(&j.on_failure, "on_failure", errors),
        tasks: vec![Task::Backup],
        timeout: Duration::from_secs(300),
    };
    if let Some(tasks) = &j.hook_tasks {
        h.tasks = tasks.iter().filter_map(|t| errors.ok(t.span(), t.get_ref().parse::<Task>())).collect();
    }
    if let Some(t) = &j.hook_timeout {
        match errors.ok(t.span(), parse_duration(t.get_ref())) {
            Some(d) if d.is_zero() => errors.push(t.span(), "hook_timeout must be more than 0"),
            Some(d) => h.timeout = d,
            None => {}
        }
    }
    h
}

/// A `notify` table: a webhook URL (http or https), and/or sendmail with
/// its recipients (both or neither).
fn notify(sn: Spanned<FileNotify>, errors: &mut Errors) -> Notify {
    let span = sn.span();
    let n = sn.into_inner();
    let mut out = Notify { webhook_timeout: Duration::from_secs(10), ..Notify::default() };
    if let Some(w) = &n.webhook {
        let url = w.get_ref();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        if !scheme_ok || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            errors.push(w.span(), format!("invalid webhook URL {url:?}: give an http:// or https:// URL"));
        }
        out.webhook = Some(url.clone());
    }
    if let Some(t) = &n.webhook_timeout {
        match errors.ok(t.span(), parse_duration(t.get_ref())) {
            Some(d) if d.is_zero() => errors.push(t.span(), "webhook_timeout must be more than 0"),
            Some(d) => out.webhook_timeout = d,
            None => {}
        }
    }
    out.sendmail = argv(&n.sendmail, "sendmail", errors);
    // Addresses go into message headers: one line each, nothing to inject.
    let header_safe = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c == ',');
    for a in n.email_to.iter().chain(&n.email_from) {
        if !header_safe(a.get_ref()) || !a.get_ref().contains('@') {
            errors.push(a.span(), format!("invalid email address {:?}", a.get_ref()));
        }
    }
    out.email_to = n.email_to.iter().map(|a| a.get_ref().clone()).collect();
    out.email_from = n.email_from.map(|a| a.into_inner());
    if out.sendmail.is_empty() != out.email_to.is_empty() {
        errors.push(span, "notify: give sendmail and email_to together");
    }
    out
}

/// Exactly one of `password_file` and a non-empty `password_env`.
fn password_source(
    file: Option<Spanned<PathBuf>>,
    env: Option<Spanned<String>>,
    job: &str,
    job_span: &Range<usize>,
    errors: &mut Errors,
) -> Option<PasswordSource> {
    match (file, env) {
        (Some(f), None) => Some(PasswordSource::File(f.into_inner())),
        (None, Some(e)) if !e.get_ref().is_empty() => Some(PasswordSource::Env(e.into_inner())),
        (None, Some(e)) => {
            errors.push(e.span(), "password_env is empty");
            None
        }
        (Some(f), Some(_)) => {
            errors.push(f.span(), "give password_file or password_env, not both");
            None
        }
        (None, None) => {
            errors.push(job_span.clone(), format!("job {job:?}: no password_file or password_env"));
            None
        }
    }
}

/// The job's time zone: the system's when not given, UTC (after an error)
/// when unknown.
fn time_zone(zone: Option<&Spanned<String>>, errors: &mut Errors) -> TimeZone {
    match zone {
        None => TimeZone::system(),
        Some(z) => match TimeZone::get(z.get_ref()) {
            Ok(tz) => tz,
            Err(_) => {
                errors.push(z.span(), format!("unknown time zone {:?}", z.get_ref()));
                TimeZone::UTC
            }
        },
    }
}

/// Checks the job's sources (paths and/or a command, absolute paths, the
/// stream name, the excludes); returns the stream name.
fn check_sources(j: &FileJob, job: &str, job_span: &Range<usize>, errors: &mut Errors) -> String {
    if j.paths.is_empty() && j.command.is_empty() {
        errors.push(job_span.clone(), format!("job {job:?}: no sources (give paths and/or command)"));
    }
    for p in &j.paths {
        if !p.get_ref().is_absolute() {
            errors.push(p.span(), format!("path {} is not absolute", p.get_ref().display()));
        }
    }
    let stdin_name = match &j.stdin_name {
        Some(n) => {
            if let Err(e) = crate::source::check_stream_name(n.get_ref()) {
                errors.push(n.span(), e.to_string());
            }
            n.get_ref().clone()
        }
        None => format!("{job}.stream"),
    };
    if let Err(e) = crate::source::Excludes::new(&j.exclude.iter().map(|e| e.get_ref().clone()).collect::<Vec<_>>()) {
        let span = j.exclude.first().map(|e| e.span()).unwrap_or(job_span.clone());
        errors.push(span, e.to_string());
    }
    stdin_name
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[agent]
max_concurrent = 3
metrics_listen = "127.0.0.1:9184"

[[job]]
name = "acme-db"
tenant = "acme"
repository = "s3://backups/prod"
password_env = "ACME_PW"
schedule = "0 */6 * * *"
timezone = "America/Sao_Paulo"
command = ["pg_dump", "--format=custom", "acme"]
stdin_name = "acme.dump"
tags = ["db"]
plan = "pro"
prune_schedule = "0 4 * * *"
check_schedule = "0 6 * * 0"
check_subset = "5%"
drill_schedule = "0 5 1 * *"

[[job]]
name = "acme-files"
tenant = "acme"
repository = "/srv/backup"
password_file = "/etc/strongroom/acme.pw"
schedule = "*/10 * * * * *"
paths = ["/srv/acme"]
exclude = ["*.tmp"]
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.agent.max_concurrent, 3);
        assert_eq!(c.jobs.len(), 2);
        let j = &c.jobs[0];
        assert_eq!(j.password, PasswordSource::Env("ACME_PW".into()));
        assert_eq!(j.plan, Some(Plan::Pro));
        assert_eq!(j.check_subset, 5.0);
        assert_eq!(c.jobs[1].stdin_name, "acme-files.stream");
        // 6 fields: seconds first.
        let t: jiff::Timestamp = "2026-01-01T00:00:01Z".parse().unwrap();
        assert_eq!(c.jobs[1].schedule.next_after(t).unwrap().timestamp().to_string(), "2026-01-01T00:00:10Z");
        // Every 6 hours in Sao Paulo (UTC-3): 00, 06, 12, 18 local.
        let next = j.schedule.next_after("2026-01-01T04:00:00Z".parse().unwrap()).unwrap();
        assert_eq!(next.timestamp().to_string(), "2026-01-01T09:00:00Z");
    }

    /// Every key the lists name, so a key missing from a list is caught.
    const EVERY_KEY: &str = r#"
[agent]
max_concurrent = 1
metrics_listen = "127.0.0.1:0"
state_dir = "/var/lib/s"
cache_dir = "/var/cache/s"
grace = "1m"
lock_wait = "1m"
[agent.notify]
webhook = "https://hooks.example.com/x"
webhook_timeout = "5s"
sendmail = ["/usr/sbin/sendmail", "-t"]
email_to = ["ops@example.com"]
email_from = "backup@example.com"

[[job]]
name = "j"
tenant = "t"
repository = "/r"
s3_endpoint = "http://127.0.0.1:9000"
password_env = "P"
schedule = "0 * * * *"
timezone = "UTC"
paths = ["/srv"]
command = ["pg_dump"]
stdin_name = "db.sql"
exclude = ["*.tmp"]
tags = ["x"]
host = "h"
plan = "basic"
prune_schedule = "0 4 * * *"
check_schedule = "0 5 * * *"
check_subset = "1%"
drill_schedule = "0 6 * * *"
before = ["/bin/true"]
after = ["/bin/true", "after"]
on_failure = ["/bin/false"]
hook_tasks = ["backup", "check"]
hook_timeout = "30s"

[[job]]
name = "k"
tenant = "t"
repository = "/r"
password_env = "P"
schedule = "0 * * * *"
paths = ["/srv"]
[job.notify]
webhook = "http://127.0.0.1:1/hook"
"#;

    #[test]
    fn every_known_key_parses() {
        let c = parse(EVERY_KEY).unwrap();
        let j = &c.jobs[0];
        assert_eq!(j.hooks.tasks, vec![Task::Backup, Task::Check]);
        assert_eq!(j.hooks.timeout, Duration::from_secs(30));
        assert_eq!(j.hooks.after, vec!["/bin/true".to_string(), "after".into()]);
        // The agent's notify is the default; a job's own replaces it.
        assert_eq!(j.notify, c.agent.notify);
        assert_eq!(j.notify.email_to, vec!["ops@example.com".to_string()]);
        assert_eq!(j.notify.webhook_timeout, Duration::from_secs(5));
        assert_eq!(c.jobs[1].notify.webhook.as_deref(), Some("http://127.0.0.1:1/hook"));
        assert!(c.jobs[1].notify.sendmail.is_empty());
        assert_eq!(c.jobs[1].notify.webhook_timeout, Duration::from_secs(10));
        assert_eq!(c.jobs[1].hooks.tasks, vec![Task::Backup]);
    }

    #[test]
    fn bad_hooks_and_notify_targets_are_errors() {
        let bad = EVERY_KEY
            .replace("hook_tasks = [\"backup\", \"check\"]", "hook_tasks = [\"backup\", \"restore\"]")
            .replace("webhook = \"http://127.0.0.1:1/hook\"", "webhook = \"ftp://x\"\nemail_to = [\"a@b\\nBcc: c@d\"]")
            .replace("before = [\"/bin/true\"]", "before = [\"\"]");
        let e = parse(&bad).unwrap_err();
        let msgs: Vec<String> = e.iter().map(|e| e.to_string()).collect();
        for want in [
            "unknown task \"restore\"",
            "invalid webhook URL",
            "invalid email address",
            "sendmail and email_to",
            "program name is empty",
        ] {
            assert!(msgs.iter().any(|m| m.contains(want)), "{want} not in {msgs:#?}");
        }
    }

    #[test]
    fn errors_have_line_and_column() {
        let bad = GOOD.replace("schedule = \"0 */6 * * *\"", "schedule = \"0 */6 * *\"");
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (11, 12), "{}", e[0]);
        assert!(e[0].message.contains("invalid schedule"), "{}", e[0]);

        // Every error, in the order of the text: the value after the key.
        let e = parse(&GOOD.replace("plan = \"pro\"", "plan = \"gold\"\ncolour = 1")).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].line, 16, "{}", e[0]);
        assert!(e[0].message.starts_with("unknown plan \"gold\""), "{}", e[0]);
        assert_eq!((e[1].line, e[1].column), (17, 1), "{}", e[1]);
        assert!(e[1].message.starts_with("unknown field `colour` in [[job]], expected one of `name`"), "{}", e[1]);

        let e = parse(&GOOD.replace("timezone = \"America/Sao_Paulo\"", "timezone = \"Mars/Base\"")).unwrap_err();
        assert_eq!((e[0].line, e[0].column), (12, 12), "{}", e[0]);

        // A name longer than a snapshot's job may be is refused here, not
        // at every backup.
        let long = "j".repeat(crate::codec::snapshot::MAX_JOB_BYTES + 1);
        let e = parse(&GOOD.replace("\"acme-files\"", &format!("{long:?}"))).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].column), (23, 8), "{}", e[0]);
        assert_eq!(e[0].message, "job name is longer than 256 bytes (257 bytes)");
        assert!(parse(&GOOD.replace("\"acme-files\"", &format!("{:?}", &long[1..]))).is_ok());

        let e = parse(&GOOD.replace("acme-files", "acme-db")).unwrap_err();
        assert!(e[0].message.contains("used twice"), "{}", e[0]);
        assert_eq!(e[0].line, 23);

        let e = parse("[agent]\nmax_concurent = 2\n[[job]]\nname = \"x\"\nschedul = 1\n[job.notify]\nwebhok = \"x\"\n")
            .unwrap_err();
        let unknown: Vec<(usize, usize)> =
            e.iter().filter(|e| e.message.starts_with("unknown field")).map(|e| (e.line, e.column)).collect();
        assert_eq!(unknown, vec![(2, 1), (5, 1), (7, 1)], "{e:?}");

        let e = parse("[[job]]\nname = \"x\"\n").unwrap_err();
        assert_eq!(e[0].line, 1, "{}", e[0]);
        assert!(e[0].message.contains("missing field"), "{}", e[0]);
    }
}
