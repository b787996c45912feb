//! Prometheus metrics: the only module that imports `prometheus-client`.
//!
//! One [`Metrics`] registry per process. Every series is labelled
//! `tenant` and `job` (the agent's job name; empty for commands run by
//! hand); the agent's scheduling counters add `task`. The agent serves it
//! over HTTP; any command can write it to a text file for node_exporter's
//! textfile collector ([`Metrics::write_textfile`], atomically replaced).
//!
//! Counters are encoded with the `_total` suffix OpenMetrics requires, so
//! `backup_success` is exposed as `backup_success_total`.

use std::path::Path;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of every metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Labels {
    /// Tenant name.
    pub tenant: String,
    /// Agent job name, or empty.
    pub job: String,
}

impl Labels {
    /// Labels for a tenant and job.
    pub fn new(tenant: &str, job: &str) -> Self {
        Self { tenant: tenant.to_string(), job: job.to_string() }
    }
}

/// The labels of the agent's per-task counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Tenant name.
    pub tenant: String,
    /// Agent job name.
    pub job: String,
    /// `backup`, `prune`, `check` or `drill`.
    pub task: String,
}

impl TaskLabels {
    fn new(l: &Labels, task: &str) -> Self {
        Self { tenant: l.tenant.clone(), job: l.job.clone(), task: task.to_string() }
    }
}

type GaugeF = Family<Labels, Gauge<f64, AtomicU64>>;
type CounterU = Family<Labels, Counter>;
type TaskCounter = Family<TaskLabels, Counter>;

/// The registry and every metric strongroom exports.
pub struct Metrics {
    registry: Registry,
    /// Wall time of the last backup.
    pub backup_duration_seconds: GaugeF,
    /// Logical size of the last backup's snapshot.
    pub backup_size_bytes: GaugeF,
    /// Bytes the last backup added to the store.
    pub backup_added_bytes: GaugeF,
    /// Successful backups (`backup_success_total`).
    pub backup_success: CounterU,
    /// Failed backups (`backup_failure_total`).
    pub backup_failure: CounterU,
    /// Wall time of the last restore (or restore drill).
    pub restore_duration_seconds: GaugeF,
    /// Bytes of all the tenant's objects in the store.
    pub repository_stored_bytes: GaugeF,
    /// Unix time of the last successful backup.
    pub last_success_timestamp_seconds: GaugeF,
    /// Unix time of the last check that found no damage.
    pub last_check_success_timestamp_seconds: GaugeF,
    /// Unix time of the last successful restore drill.
    pub last_drill_success_timestamp_seconds: GaugeF,
    /// Logical bytes over unique chunk bytes.
    pub dedup_ratio: GaugeF,
    /// Failed checks (`check_failure_total`).
    pub check_failure: CounterU,
    /// Failed restore drills (`drill_failure_total`).
    pub drill_failure: CounterU,
    /// Tasks that came due while their job was busy and ran once it was
    /// free (`agent_tasks_delayed_total`).
    pub agent_tasks_delayed: TaskCounter,
    /// Tasks missed while the agent was down, run at its start
    /// (`agent_tasks_caught_up_total`).
    pub agent_tasks_caught_up: TaskCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered and no samples.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let f = GaugeF::default();
            registry.register(name, help, f.clone());
            f
        };
        let backup_duration_seconds = gauge("backup_duration_seconds", "Wall time of the last backup");
        let backup_size_bytes = gauge("backup_size_bytes", "Logical size of the last backup's snapshot");
        let backup_added_bytes = gauge("backup_added_bytes", "Bytes the last backup added to the store");
        let restore_duration_seconds = gauge("restore_duration_seconds", "Wall time of the last restore or drill");
        let repository_stored_bytes = gauge("repository_stored_bytes", "Bytes of the tenant's objects in the store");
        let last_success_timestamp_seconds =
            gauge("last_success_timestamp_seconds", "Unix time of the last successful backup");
        let last_check_success_timestamp_seconds =
            gauge("last_check_success_timestamp_seconds", "Unix time of the last check that found no damage");
        let last_drill_success_timestamp_seconds =
            gauge("last_drill_success_timestamp_seconds", "Unix time of the last successful restore drill");
        let dedup_ratio = gauge("dedup_ratio", "Logical bytes over unique chunk bytes");
        let mut counter = |name: &str, help: &str| {
            let f = CounterU::default();
            registry.register(name, help, f.clone());
            f
        };
        let backup_success = counter("backup_success", "Successful backups");
        let backup_failure = counter("backup_failure", "Failed backups");
        let check_failure = counter("check_failure", "Checks that failed or found damage");
        let drill_failure = counter("drill_failure", "Failed restore drills");
        let mut task_counter = |name: &str, help: &str| {
            let f = TaskCounter::default();
            registry.register(name, help, f.clone());
            f
        };
        let agent_tasks_delayed =
            task_counter("agent_tasks_delayed", "Tasks due while their job was busy, run once it was free");
        let agent_tasks_caught_up =
            task_counter("agent_tasks_caught_up", "Tasks missed while the agent was down, run at its start");
        Self {
            registry,
            backup_duration_seconds,
            backup_size_bytes,
            backup_added_bytes,
            backup_success,
            backup_failure,
            restore_duration_seconds,
            repository_stored_bytes,
            last_success_timestamp_seconds,
            last_check_success_timestamp_seconds,
            last_drill_success_timestamp_seconds,
            dedup_ratio,
            check_failure,
            drill_failure,
            agent_tasks_delayed,
            agent_tasks_caught_up,
        }
    }

    /// Counts a task that came due while its job was busy.
    pub fn task_delayed(&self, l: &Labels, task: &str) {
        self.agent_tasks_delayed.get_or_create(&TaskLabels::new(l, task)).inc();
    }

    /// Counts a task run at start-up because the agent missed it.
    pub fn task_caught_up(&self, l: &Labels, task: &str) {
        self.agent_tasks_caught_up.get_or_create(&TaskLabels::new(l, task)).inc();
    }

    /// Records a successful backup.
    pub fn backup_ok(&self, l: &Labels, duration_seconds: f64, size_bytes: u64, added_bytes: u64) {
        self.backup_duration_seconds.get_or_create(l).set(duration_seconds);
        self.backup_size_bytes.get_or_create(l).set(size_bytes as f64);
        self.backup_added_bytes.get_or_create(l).set(added_bytes as f64);
        self.backup_success.get_or_create(l).inc();
        let _ = self.backup_failure.get_or_create(l); // present at 0
        self.last_success_timestamp_seconds.get_or_create(l).set(now_seconds());
    }

    /// Records a failed backup.
    pub fn backup_failed(&self, l: &Labels) {
        let _ = self.backup_success.get_or_create(l);
        self.backup_failure.get_or_create(l).inc();
    }

    /// Records repository sizes (from `stats`).
    pub fn repository(&self, l: &Labels, stored_bytes: u64, dedup_ratio: f64) {
        self.repository_stored_bytes.get_or_create(l).set(stored_bytes as f64);
        self.dedup_ratio.get_or_create(l).set(dedup_ratio);
    }

    /// Records a check's outcome.
    pub fn check(&self, l: &Labels, ok: bool) {
        if ok {
            self.last_check_success_timestamp_seconds.get_or_create(l).set(now_seconds());
            let _ = self.check_failure.get_or_create(l);
        } else {
            self.check_failure.get_or_create(l).inc();
        }
    }

    /// Records a restore's duration.
    pub fn restore(&self, l: &Labels, duration_seconds: f64) {
        self.restore_duration_seconds.get_or_create(l).set(duration_seconds);
    }

    /// Records a restore drill's outcome.
    pub fn drill(&self, l: &Labels, ok: bool, duration_seconds: Option<f64>) {
        if ok {
            self.last_drill_success_timestamp_seconds.get_or_create(l).set(now_seconds());
            let _ = self.drill_failure.get_or_create(l);
            if let Some(d) = duration_seconds {
                self.restore(l, d);
            }
        } else {
            self.drill_failure.get_or_create(l).inc();
        }
    }

    /// Carries samples over from the exposition this process is about to
    /// replace (`--metrics-textfile`): counters continue from their
    /// previous values, and gauges this process did not set keep theirs
    /// (a failed backup does not erase `last_success_timestamp_seconds`).
    /// Lines it does not understand are skipped.
    pub fn carry_over(&self, previous: &str) {
        for line in previous.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let Ok(value) = value.parse::<f64>() else { continue };
            let Some((name, rest)) = series.split_once('{') else { continue };
            let Some((labels, task)) = rest.strip_suffix('}').and_then(parse_labels) else { continue };
            if let Some(task) = task {
                let family = match name {
                    "agent_tasks_delayed_total" => &self.agent_tasks_delayed,
                    "agent_tasks_caught_up_total" => &self.agent_tasks_caught_up,
                    _ => continue,
                };
                if value.is_finite() && value >= 0.0 {
                    family.get_or_create(&TaskLabels::new(&labels, &task)).inc_by(value as u64);
                }
            } else if let Some(counter) = name.strip_suffix("_total").and_then(|n| self.counter(n)) {
                if value.is_finite() && value >= 0.0 {
                    counter.get_or_create(&labels).inc_by(value as u64);
                }
            } else if let Some(gauge) = self.gauge(name) {
                if gauge.get(&labels).is_none() {
                    gauge.get_or_create(&labels).set(value);
                }
            }
        }
    }

    fn counter(&self, name: &str) -> Option<&CounterU> {
        Some(match name {
            "backup_success" => &self.backup_success,
            "backup_failure" => &self.backup_failure,
            "check_failure" => &self.check_failure,
            "drill_failure" => &self.drill_failure,
            _ => return None,
        })
    }

    fn gauge(&self, name: &str) -> Option<&GaugeF> {
        Some(match name {
            "backup_duration_seconds" => &self.backup_duration_seconds,
            "backup_size_bytes" => &self.backup_size_bytes,
            "backup_added_bytes" => &self.backup_added_bytes,
            "restore_duration_seconds" => &self.restore_duration_seconds,
            "repository_stored_bytes" => &self.repository_stored_bytes,
            "last_success_timestamp_seconds" => &self.last_success_timestamp_seconds,
            "last_check_success_timestamp_seconds" => &self.last_check_success_timestamp_seconds,
            "last_drill_success_timestamp_seconds" => &self.last_drill_success_timestamp_seconds,
            "dedup_ratio" => &self.dedup_ratio,
            _ => return None,
        })
    }

    /// Sets a gauge by name (e.g. a timestamp restored from run records);
    /// false if there is no gauge of that name.
    pub fn set_gauge(&self, name: &str, l: &Labels, value: f64) -> bool {
        match self.gauge(name) {
            Some(g) => {
                g.get_or_create(l).set(value);
                true
            }
            None => false,
        }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// Writes [`Metrics::encode`] to `path` atomically and durably: a
    /// temporary file in the same directory, synced, renamed over the old
    /// one, and the directory synced, so a crash leaves the old file or
    /// the new one, never an empty or partial one.
    pub fn write_textfile(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.encode().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// `tenant="a",job="b"` and an optional `task="c"` (as
/// [`Metrics::encode`] writes them, with `\\`, `\"` and `\n` escapes).
fn parse_labels(text: &str) -> Option<(Labels, Option<String>)> {
    let (mut tenant, mut job, mut task) = (None, None, None);
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next() != Some('"') {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        match key.trim() {
            "tenant" => tenant = Some(value),
            "job" => job = Some(value),
            "task" => task = Some(value),
            _ => return None,
        }
        match chars.next() {
            Some(',') | None => {}
            Some(_) => return None,
        }
    }
    Some((Labels { tenant: tenant?, job: job? }, task))
}

fn now_seconds() -> f64 {
    jiff::Timestamp::now().as_millisecond() as f64 / 1000.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let m = Metrics::new();
        let l = Labels::new("acme", "acme-db");
        m.backup_ok(&l, 1.5, 100, 10);
        m.backup_failed(&Labels::new("acme", ""));
        m.repository(&l, 1234, 2.5);
        m.check(&l, true);
        m.drill(&l, true, Some(3.0));
        let text = m.encode();
        for line in [
            r#"backup_success_total{tenant="acme",job="acme-db"} 1"#,
            r#"backup_failure_total{tenant="acme",job=""} 1"#,
            r#"backup_failure_total{tenant="acme",job="acme-db"} 0"#,
            r#"backup_duration_seconds{tenant="acme",job="acme-db"} 1.5"#,
            r#"backup_size_bytes{tenant="acme",job="acme-db"} 100.0"#,
            r#"backup_added_bytes{tenant="acme",job="acme-db"} 10.0"#,
            r#"repository_stored_bytes{tenant="acme",job="acme-db"} 1234.0"#,
            r#"dedup_ratio{tenant="acme",job="acme-db"} 2.5"#,
            r#"restore_duration_seconds{tenant="acme",job="acme-db"} 3.0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        for name in [
            "last_success_timestamp_seconds",
            "last_check_success_timestamp_seconds",
            "last_drill_success_timestamp_seconds",
        ] {
            assert!(text.contains(&format!("{name}{{tenant=\"acme\",job=\"acme-db\"}} 1")), "{name} in\n{text}");
        }
    }

    #[test]
    fn every_series_carries_tenant_and_job() {
        let m = Metrics::new();
        let l = Labels::new("acme", "acme-db");
        m.backup_ok(&l, 1.0, 1, 1);
        m.repository(&l, 1, 1.0);
        m.check(&l, false);
        m.drill(&l, false, None);
        m.task_delayed(&l, "check");
        m.task_caught_up(&l, "backup");
        let text = m.encode();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() >= 12, "{text}");
        for s in samples {
            assert!(s.contains(r#"tenant="acme",job="acme-db""#), "{s}");
        }
        // The task counters carry over like the others.
        let next = Metrics::new();
        next.carry_over(&text);
        assert!(next.encode().contains(r#"agent_tasks_delayed_total{tenant="acme",job="acme-db",task="check"} 1"#));
    }

    #[test]
    fn carry_over_adds_counters_and_keeps_unset_gauges() {
        let first = Metrics::new();
        let l = Labels::new("a\"b", "j,1");
        first.backup_ok(&l, 2.0, 10, 1);
        first.backup_failed(&Labels::new("other", ""));
        let second = Metrics::new();
        second.backup_failed(&l);
        second.carry_over(&first.encode());
        second.carry_over("garbage\nbackup_success_total{tenant=\"x\"} 1\n");
        let text = second.encode();
        for line in [
            r#"backup_success_total{tenant="a\"b",job="j,1"} 1"#,
            r#"backup_failure_total{tenant="a\"b",job="j,1"} 1"#,
            r#"backup_failure_total{tenant="other",job=""} 1"#,
            r#"backup_size_bytes{tenant="a\"b",job="j,1"} 10.0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.contains(r#"last_success_timestamp_seconds{tenant="a\"b",job="j,1"}"#), "{text}");
    }

    #[test]
    fn textfile_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strongroom.prom");
        let m = Metrics::new();
        m.backup_failed(&Labels::new("t", ""));
        m.write_textfile(&path).unwrap();
        m.write_textfile(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#"backup_failure_total{tenant="t",job=""} 1"#), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
