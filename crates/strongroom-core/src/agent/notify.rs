//! Notifications of a task's state changes: its first failure after
//! success, and its recovery (first success after failure); never every
//! run. The state is each (job, task)'s last result, restored from the
//! run records at start-up, so a restart neither repeats nor loses one.
//! A task with no record counts as healthy: its first run failing is
//! notified, its first run succeeding is not.
//!
//! Targets: a webhook (the run record POSTed as JSON, with `event`; tried
//! up to [`WEBHOOK_ATTEMPTS`] times with backoff) and email through a
//! sendmail-compatible command (the message on its stdin). This module is
//! the only one that imports `reqwest` (already in the tree through
//! object_store, with rustls, so https works).

use std::time::Duration;

use serde::Serialize;

use super::hooks::run_command;
use super::{Job, Notify, RunRecord, Runner};

/// Tries per webhook notification.
const WEBHOOK_ATTEMPTS: u32 = 3;
/// Wait before the second try; doubled before each further one.
const WEBHOOK_BACKOFF: Duration = Duration::from_secs(1);
/// Time sendmail may take to accept a message.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(60);

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Event {
    /// The first failure after a success (or after no run at all).
    Failure,
    /// The first success after a failure.
    Recovery,
}

/// The event a run makes, given the previous run of the same task.
pub(super) fn event(previous_ok: Option<bool>, ok: bool) -> Option<Event> {
    match (previous_ok.unwrap_or(true), ok) {
        (true, false) => Some(Event::Failure),
        (false, true) => Some(Event::Recovery),
        _ => None,
    }
}

/// The webhook's body: the run record and the event.
#[derive(Serialize)]
struct Payload<'a> {
    event: Event,
    #[serde(flatten)]
    record: &'a RunRecord,
}

impl Runner {
    /// Records the run's result as its task's state, and notifies the
    /// job's targets if the state changed. Failures to notify are logged.
    pub(super) async fn notify(&self, job: &Job, rec: &RunRecord) {
        let Some(event) = self.record_state(rec) else { return };
        if job.notify.is_empty() {
            return;
        }
        tracing::info!(job = %rec.job, task = rec.task.as_str(), "notifying: {event:?}");
        let n = &job.notify;
        if let Some(url) = &n.webhook {
            if let Err(e) = webhook(url, n.webhook_timeout, &Payload { event, record: rec }).await {
                tracing::warn!(job = %rec.job, "webhook notification failed: {e}");
            }
        }
        if !n.sendmail.is_empty() {
            let message = email(n, event, rec);
            let r = run_command("sendmail", &rec.job, &n.sendmail, &[], message, SENDMAIL_TIMEOUT, &self.children);
            if let Err(e) = r.await {
                tracing::warn!(job = %rec.job, "email notification failed: {e}");
            }
        }
    }
}

impl Runner {
    /// Records the run's result as its task's state; the event, if the
    /// state changed. A run interrupted at shutdown changes nothing: it
    /// neither failed nor succeeded (an agent restart is not an outage).
    fn record_state(&self, rec: &RunRecord) -> Option<Event> {
        if rec.interrupted() {
            return None;
        }
        let previous = self.last_ok.lock().ok()?.insert((rec.job.clone(), rec.task), rec.ok);
        event(previous, rec.ok)
    }
}

/// POSTs `payload` to `url`; retries on errors and non-2xx answers.
/// Redirects are not followed (a 307 or 308 would send the run record to
/// wherever the answer points), and only the URL's origin is logged: its
/// path or user info may hold a token.
async fn webhook(url: &str, timeout: Duration, payload: &Payload<'_>) -> Result<(), String> {
    let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut backoff = WEBHOOK_BACKOFF;
    let mut last = String::new();
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        if attempt > 1 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
        let sent =
            client.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone()).send().await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{}: HTTP {}", origin(url), r.status()),
            // Without the URL: reqwest's message names it already.
            Err(e) => last = e.without_url().to_string(),
        }
        tracing::debug!("webhook attempt {attempt} of {WEBHOOK_ATTEMPTS}: {last}");
    }
    Err(format!("{last} (after {WEBHOOK_ATTEMPTS} attempts)"))
}

/// `scheme://host[:port]` of `url`: what may be logged of it.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "webhook".to_string(),
    }
}

/// The email: headers (addresses were checked to be one line each; job
/// and tenant names hold no control characters), a blank line, the body.
fn email(n: &Notify, event: Event, rec: &RunRecord) -> Vec<u8> {
    let what = match event {
        Event::Failure => "FAILED",
        Event::Recovery => "recovered",
    };
    let mut m = format!("To: {}\n", n.email_to.join(", "));
    if let Some(from) = &n.email_from {
        m += &format!("From: {from}\n");
    }
    m += &format!("Subject: strongroom: job {} {} {what}\n", rec.job, rec.task.as_str());
    m += "Content-Type: text/plain; charset=utf-8\n\n";
    m += &format!("Job {} (tenant {}): {} {what}.\n\n", rec.job, rec.tenant, rec.task.as_str());
    m += &format!("Started: {}\nDuration: {:.1}s\nExit code: {}\n", rec.start, rec.duration_seconds, rec.exit_code);
    if let Some(e) = &rec.error {
        m += &format!("Error: {e}\n");
    }
    if !rec.snapshots.is_empty() {
        m += &format!("Snapshots: {}\n", rec.snapshots.join(" "));
    }
    m.into_bytes()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_state_changes_notify() {
        // No history, then fail, fail, ok, ok, fail.
        let mut previous = None;
        let mut events = Vec::new();
        for ok in [false, false, true, true, false] {
            events.extend(event(previous, ok));
            previous = Some(ok);
        }
        assert_eq!(events, vec![Event::Failure, Event::Recovery, Event::Failure]);
        assert_eq!(event(None, true), None);
    }

    #[test]
    fn a_run_interrupted_at_shutdown_is_neither_failure_nor_success() {
        use crate::agent::{Task, EXIT_INTERRUPTED};
        let runner = Runner::new("strongroom".into(), Default::default(), None, Duration::ZERO);
        let rec = |exit_code: u8| RunRecord {
            job: "j".into(),
            tenant: "t".into(),
            task: Task::Backup,
            start: "2026-01-01T00:00:00Z".into(),
            duration_seconds: 1.0,
            ok: exit_code == 0,
            exit_code,
            snapshots: vec![],
            error: None,
        };
        let events: Vec<Option<Event>> =
            [0, EXIT_INTERRUPTED, 0, 1, EXIT_INTERRUPTED, 1, 0].iter().map(|c| runner.record_state(&rec(*c))).collect();
        assert_eq!(events, vec![None, None, None, Some(Event::Failure), None, None, Some(Event::Recovery)]);
        // As the first run of a task, too.
        let runner = Runner::new("strongroom".into(), Default::default(), None, Duration::ZERO);
        assert_eq!(runner.record_state(&rec(EXIT_INTERRUPTED)), None);
        assert_eq!(runner.record_state(&rec(0)), None);

        // Restored from the run records the same way: a failure, then an
        // interrupted run; the next success is a recovery.
        let dir = tempfile::tempdir().unwrap();
        let config = crate::agent::config::parse(
            "[[job]]\nname = \"j\"\ntenant = \"t\"\nrepository = \"/r\"\npassword_env = \"P\"\n\
             schedule = \"0 * * * *\"\npaths = [\"/srv\"]\n",
        )
        .unwrap();
        let mut runner = Runner::new("strongroom".into(), Default::default(), None, Duration::ZERO);
        runner.state_dir = Some(dir.path().to_path_buf());
        runner.save(&rec(1));
        runner.save(&rec(EXIT_INTERRUPTED));
        runner.load_state(&config);
        assert_eq!(runner.record_state(&rec(0)), Some(Event::Recovery));
    }

    #[test]
    fn only_the_origin_of_a_webhook_url_is_logged() {
        assert_eq!(origin("https://user:pw@hooks.example.com:8443/t/SECRET?k=v"), "https://hooks.example.com:8443");
        assert_eq!(origin("http://127.0.0.1/hook/SECRET"), "http://127.0.0.1");
        assert_eq!(origin("not a url SECRET"), "webhook");
    }
}
