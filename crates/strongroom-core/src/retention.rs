//! Retention: which snapshots a policy keeps and which `forget` removes.
//!
//! Owns: the [`Policy`] (keep-last/hourly/daily/weekly/monthly/yearly,
//! keep-within, keep-tag), the named [`Plan`]s, and [`plan_forget`], which
//! turns a list of snapshots into a [`ForgetPlan`] saying, for each
//! snapshot, keep or remove and why. Must not: read or delete anything, or
//! look at the clock (callers pass `now` and the time zone). The CLI prints
//! the plan for `--dry-run` and executes it with `Repo::forget`.
//!
//! The semantics follow restic's `forget` (`internal/data/snapshot_policy.go`,
//! `ApplyPolicy`) where the two overlap:
//!
//! - Snapshots are grouped by host and (sorted) paths, restic's default
//!   `--group-by host,paths`; the policy applies to each group on its own.
//! - Within a group, snapshots are walked newest first. Each count rule
//!   keeps the newest snapshot of each period (hour, day, ISO week, month,
//!   year; `last` counts snapshots) until it has kept N; `Some(0)` and
//!   `None` both turn a rule off. While a rule still has counts left when
//!   the walk reaches the oldest snapshot, that snapshot is kept too
//!   ("oldest daily …"), as restic does since 0.16.
//! - Keep-within keeps every snapshot strictly newer than the newest
//!   snapshot of the group that is not in the future, minus the span
//!   (years, months and days in calendar terms, then hours).
//! - Keep-tag keeps snapshots that carry every tag of one of the given
//!   lists (`a,b` needs both; repeat the option for "any of").
//! - A policy with no rule at all is refused, as restic 0.16+ refuses a
//!   forget without a policy.
//!
//! Where they differ: periods are calendar periods in the time zone the
//! caller passes (the local zone in the CLI), not in the UTC offset written
//! into each snapshot; and held snapshots (legal holds) are always kept.
//! A hold does not take part in counting, so adding a hold never changes
//! what else is kept.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

use crate::error::{Error, Result};
use crate::group::{GroupBy, GroupKey};
use crate::id::SnapshotId;
use crate::snapshot::Snapshot;

/// Which snapshots to keep. Every rule adds to what is kept; a snapshot no
/// rule keeps is removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the newest N snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than the group's newest snapshot minus this.
    pub keep_within: Option<WithinSpan>,
    /// Keep snapshots carrying all tags of any of these comma-separated lists.
    pub keep_tags: Vec<String>,
}

/// A calendar span in restic's `--keep-within` format: `1y2m3d4h`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WithinSpan {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days.
    pub days: u32,
    /// Hours of 3600 seconds.
    pub hours: u32,
}

/// A named retention plan, as a tenant can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Daily 7, weekly 4, monthly 3, yearly 0.
    Basic,
    /// Daily 30, weekly 12, monthly 12, yearly 2.
    Pro,
    /// Daily 60, weekly 24, monthly 24, yearly 5.
    Enterprise,
}

/// The decision for every snapshot, by group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetPlan {
    /// Groups in key order (host, paths, tags, job).
    pub groups: Vec<GroupPlan>,
}

/// The decisions for one group of snapshots (by default: same host, same
/// paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPlan {
    /// What the group's snapshots share.
    pub key: GroupKey,
    /// One per snapshot, newest first.
    pub decisions: Vec<Decision>,
}

/// What happens to one snapshot, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time, Unix nanoseconds.
    pub time_ns: i64,
    /// Keep or remove.
    pub action: Action,
    /// Every rule that keeps it; empty when it is removed.
    pub reasons: Vec<Reason>,
}

/// Keep or remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The snapshot stays.
    Keep,
    /// `forget` deletes the snapshot.
    Remove,
}

/// Why a snapshot is kept. `Display` gives the text `--dry-run` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Held; the hold's reason. Prints `hold: <reason>`.
    Hold(String),
    /// Carries the tags of this `--keep-tag` list. Prints `tag db`.
    Tag(String),
    /// Within the span of the newest snapshot. Prints `within 7d`.
    Within(WithinSpan),
    /// The k-th of the last N. Prints `last 1`.
    Last(u32),
    /// The newest snapshot of a period, or the oldest snapshot while the
    /// rule had counts left. Prints `daily 2026-11-24`, `oldest weekly 2026-W48`.
    Period {
        /// Which rule.
        rule: Rule,
        /// The period, e.g. `2026-11-24`.
        period: String,
        /// Kept as the group's oldest snapshot, not as a new period.
        oldest: bool,
    },
}

/// A calendar rule of a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Hours (`2026-11-24T13`).
    Hourly,
    /// Days (`2026-11-24`).
    Daily,
    /// ISO weeks (`2026-W48`).
    Weekly,
    /// Months (`2026-11`).
    Monthly,
    /// Years (`2026`).
    Yearly,
}

impl Policy {
    /// True when no rule would keep anything: every count absent or 0, no
    /// span (or a zero one) and no tags. Such a policy would remove every
    /// snapshot, so [`plan_forget`] refuses it.
    pub fn is_empty(&self) -> bool {
        let counts =
            [self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly];
        counts.iter().all(|c| c.unwrap_or(0) == 0)
            && self.keep_within.is_none_or(|w| w.is_zero())
            && self.keep_tags.iter().all(|t| tag_list(t).is_empty())
    }

    /// Replaces each rule that `other` sets (counts and span) and adds its
    /// tags: a plan's policy overridden by explicit options.
    pub fn overlay(mut self, other: &Policy) -> Policy {
        let pairs = [
            (&mut self.keep_last, other.keep_last),
            (&mut self.keep_hourly, other.keep_hourly),
            (&mut self.keep_daily, other.keep_daily),
            (&mut self.keep_weekly, other.keep_weekly),
            (&mut self.keep_monthly, other.keep_monthly),
            (&mut self.keep_yearly, other.keep_yearly),
        ];
        for (mine, theirs) in pairs {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        if other.keep_within.is_some() {
            self.keep_within = other.keep_within;
        }
        self.keep_tags.extend(other.keep_tags.iter().cloned());
        self
    }
}

impl fmt::Display for Policy {
    /// `keep last 3, daily 7, within 7d, tag db` (or `keep nothing`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let counts = [
            ("last", self.keep_last),
            ("hourly", self.keep_hourly),
            ("daily", self.keep_daily),
            ("weekly", self.keep_weekly),
            ("monthly", self.keep_monthly),
            ("yearly", self.keep_yearly),
        ];
        for (name, n) in counts {
            if let Some(n) = n.filter(|n| *n > 0) {
                parts.push(if n == u32::MAX { format!("all {name}") } else { format!("{name} {n}") });
            }
        }
        if let Some(w) = self.keep_within.filter(|w| !w.is_zero()) {
            parts.push(format!("within {w}"));
        }
        for t in &self.keep_tags {
            parts.push(format!("tag {t}"));
        }
        if parts.is_empty() {
            write!(f, "keep nothing")
        } else {
            write!(f, "keep {}", parts.join(", "))
        }
    }
}

impl WithinSpan {
    /// True when every field is 0.
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }
}

impl FromStr for WithinSpan {
    type Err = Error;

    /// Parses restic's format: numbers each followed by `y`, `m`, `d` or `h`
    /// (`7d`, `12h`, `1y2m`, `3d12h`). A unit given twice takes the last
    /// value, as restic does. Negative numbers are refused.
    fn from_str(text: &str) -> Result<Self> {
        let bad =
            |why: &str| Error::invalid_input("invalid duration", text, format!("{why} (e.g. 7d, 12h, 1y2m, 3d12h)"));
        let mut span = WithinSpan::default();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad("empty"));
        }
        while !rest.is_empty() {
            let n_digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if n_digits == 0 {
                return Err(bad("expected a number"));
            }
            let num: u32 = rest[..n_digits].parse().map_err(|_| bad("number too large"))?;
            let mut after = rest[n_digits..].chars();
            match after.next() {
                Some('y') => span.years = num,
                Some('m') => span.months = num,
                Some('d') => span.days = num,
                Some('h') => span.hours = num,
                Some(_) => return Err(bad("unit must be y, m, d or h")),
                None => return Err(bad("no unit after the number")),
            }
            rest = after.as_str();
        }
        Ok(span)
    }
}

impl fmt::Display for WithinSpan {
    /// restic's format; zero fields are left out (`1y2m`, `7d`, `0h`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return write!(f, "0h");
        }
        for (n, unit) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Every plan, cheapest first.
    pub const ALL: [Plan; 3] = [Plan::Basic, Plan::Pro, Plan::Enterprise];

    /// The plan's policy.
    pub fn policy(self) -> Policy {
        let (daily, weekly, monthly, yearly) = match self {
            Plan::Basic => (7, 4, 3, 0),
            Plan::Pro => (30, 12, 12, 2),
            Plan::Enterprise => (60, 24, 24, 5),
        };
        Policy {
            keep_daily: Some(daily),
            keep_weekly: Some(weekly),
            keep_monthly: Some(monthly),
            keep_yearly: Some(yearly),
            ..Policy::default()
        }
    }

    /// `basic`, `pro` or `enterprise`.
    pub fn name(self) -> &'static str {
        match self {
            Plan::Basic => "basic",
            Plan::Pro => "pro",
            Plan::Enterprise => "enterprise",
        }
    }
}

impl FromStr for Plan {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Plan::ALL
            .into_iter()
            .find(|p| p.name() == text)
            .ok_or_else(|| Error::invalid_input("unknown plan", text, "use basic, pro or enterprise"))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Hold(why) => write!(f, "hold: {why}"),
            Reason::Tag(tags) => write!(f, "tag {tags}"),
            Reason::Within(span) => write!(f, "within {span}"),
            Reason::Last(k) => write!(f, "last {k}"),
            Reason::Period { rule, period, oldest } => {
                let prefix = if *oldest { "oldest " } else { "" };
                write!(f, "{prefix}{} {period}", rule.name())
            }
        }
    }
}

impl Rule {
    /// `hourly`, `daily`, `weekly`, `monthly` or `yearly`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The period of a local time, as printed in reasons. Two times are in
    /// the same period exactly when their labels are equal.
    fn period(self, z: &Zoned) -> String {
        match self {
            Rule::Hourly => format!("{:04}-{:02}-{:02}T{:02}", z.year(), z.month(), z.day(), z.hour()),
            Rule::Daily => format!("{:04}-{:02}-{:02}", z.year(), z.month(), z.day()),
            Rule::Weekly => {
                let w = z.date().iso_week_date();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Rule::Monthly => format!("{:04}-{:02}", z.year(), z.month()),
            Rule::Yearly => format!("{:04}", z.year()),
        }
    }
}

impl ForgetPlan {
    /// Every decision, group by group.
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.groups.iter().flat_map(|g| g.decisions.iter())
    }

    /// The snapshots to delete.
    pub fn remove_ids(&self) -> Vec<SnapshotId> {
        self.decisions().filter(|d| d.action == Action::Remove).map(|d| d.id).collect()
    }

    /// How many snapshots stay.
    pub fn n_keep(&self) -> usize {
        self.decisions().filter(|d| d.action == Action::Keep).count()
    }

    /// How many snapshots go.
    pub fn n_remove(&self) -> usize {
        self.decisions().filter(|d| d.action == Action::Remove).count()
    }
}

impl Action {
    /// `keep` or `remove`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Remove => "remove",
        }
    }
}

/// Decides, for every snapshot, keep or remove, applying `policy` to each
/// group of snapshots under `group_by` (safety snapshots always apart). Held snapshots (`holds`
/// maps them to the hold's reason) are always kept. `now_ns` only excludes
/// future snapshots from being the reference of keep-within; periods are
/// calendar periods in `tz`.
///
/// Fails when the policy is empty (it would remove everything) or a
/// snapshot's time cannot be represented.
pub fn plan_forget(
    snaps: &[Snapshot],
    policy: &Policy,
    group_by: GroupBy,
    holds: &HashMap<SnapshotId, String>,
    now_ns: i64,
    tz: &TimeZone,
) -> Result<ForgetPlan> {
    if policy.is_empty() {
        return Err(Error::invalid_input(
            "no retention policy",
            "",
            "no rule keeps anything, so every snapshot would be removed",
        ));
    }
    let mut out = Vec::new();
    for (key, group) in group_snapshots(snaps, group_by) {
        let decisions = plan_group(&group, policy, holds, now_ns, tz)?;
        out.push(GroupPlan { key, decisions });
    }
    Ok(ForgetPlan { groups: out })
}

/// The plan of `forget ID...`: the named snapshots removed, in their
/// groups under `group_by`. Refuses a held snapshot, naming its hold.
pub fn plan_remove(named: &[&Snapshot], group_by: GroupBy, holds: &HashMap<SnapshotId, String>) -> Result<ForgetPlan> {
    if let Some((s, why)) = named.iter().find_map(|s| holds.get(&s.id).map(|why| (s, why))) {
        return Err(Error::invalid_input(
            "held snapshot",
            s.id.short(),
            format!("it is held ({why}): remove the hold first (strongroom hold remove)"),
        ));
    }
    let mut unique: Vec<&Snapshot> = named.to_vec();
    unique.sort_by_key(|s| s.id);
    unique.dedup_by_key(|s| s.id);
    let owned: Vec<Snapshot> = unique.into_iter().cloned().collect();
    let groups = group_snapshots(&owned, group_by)
        .into_iter()
        .map(|(key, group)| GroupPlan {
            key,
            decisions: group
                .iter()
                .map(|s| Decision { id: s.id, time_ns: s.time_ns, action: Action::Remove, reasons: Vec::new() })
                .collect(),
        })
        .collect();
    Ok(ForgetPlan { groups })
}

/// The snapshots by group, each newest first (the id breaks ties, so that
/// plans are deterministic).
fn group_snapshots(snaps: &[Snapshot], group_by: GroupBy) -> BTreeMap<GroupKey, Vec<&Snapshot>> {
    let mut groups: BTreeMap<GroupKey, Vec<&Snapshot>> = BTreeMap::new();
    for s in snaps {
        groups.entry(group_by.key(&s.record)).or_default().push(s);
    }
    for group in groups.values_mut() {
        group.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then_with(|| a.id.cmp(&b.id)));
    }
    groups
}

/// A count rule being applied: how many it may still keep and the period
/// of the last snapshot it kept.
struct Bucket {
    rule: Option<Rule>,
    remaining: u32,
    n_kept: u32,
    last: Option<String>,
}

/// Applies the policy to one group, sorted newest first.
fn plan_group(
    group: &[&Snapshot],
    policy: &Policy,
    holds: &HashMap<SnapshotId, String>,
    now_ns: i64,
    tz: &TimeZone,
) -> Result<Vec<Decision>> {
    let zoned = |s: &Snapshot| -> Result<Zoned> {
        Timestamp::from_nanosecond(i128::from(s.time_ns)).map(|t| t.to_zoned(tz.clone())).map_err(|_| Error::Damaged {
            object: format!("snapshot {}", s.id.short()),
            why: format!("time {} out of range", s.time_ns),
        })
    };
    let within = policy.keep_within.filter(|w| !w.is_zero());
    let cutoff_ns = match within {
        Some(span) => {
            // restic's reference is the newest snapshot that is not in the
            // future; with none, it uses the zero time, which keeps all.
            match group.iter().filter(|s| s.time_ns < now_ns).max_by_key(|s| s.time_ns) {
                Some(latest) => within_cutoff_ns(&zoned(latest)?, span),
                None => i128::MIN,
            }
        }
        None => i128::MIN,
    };
    let mut buckets: Vec<Bucket> = [
        (None, policy.keep_last),
        (Some(Rule::Hourly), policy.keep_hourly),
        (Some(Rule::Daily), policy.keep_daily),
        (Some(Rule::Weekly), policy.keep_weekly),
        (Some(Rule::Monthly), policy.keep_monthly),
        (Some(Rule::Yearly), policy.keep_yearly),
    ]
    .into_iter()
    .filter_map(|(rule, n)| n.filter(|n| *n > 0).map(|n| Bucket { rule, remaining: n, n_kept: 0, last: None }))
    .collect();
    let tag_lists: Vec<(String, Vec<&str>)> =
        policy.keep_tags.iter().map(|t| (t.clone(), tag_list(t))).filter(|(_, l)| !l.is_empty()).collect();

    let mut decisions = Vec::with_capacity(group.len());
    for (idx, s) in group.iter().enumerate() {
        let is_oldest = idx + 1 == group.len();
        let local = zoned(s)?;
        let mut reasons = Vec::new();
        if let Some(why) = holds.get(&s.id) {
            reasons.push(Reason::Hold(why.clone()));
        }
        for (text, tags) in &tag_lists {
            if tags.iter().all(|t| s.record.tags.iter().any(|have| have == t)) {
                reasons.push(Reason::Tag(text.clone()));
            }
        }
        if let Some(span) = within {
            if i128::from(s.time_ns) > cutoff_ns {
                reasons.push(Reason::Within(span));
            }
        }
        for b in buckets.iter_mut().filter(|b| b.remaining > 0) {
            // `last` counts snapshots: every one is a new "period".
            let period = b.rule.map(|r| r.period(&local));
            let new_period = period.is_none() || period != b.last;
            if !(new_period || is_oldest) {
                continue;
            }
            b.n_kept += 1;
            b.remaining -= 1;
            reasons.push(match (b.rule, &period) {
                (Some(rule), Some(p)) => Reason::Period { rule, period: p.clone(), oldest: !new_period },
                _ => Reason::Last(b.n_kept),
            });
            b.last = period;
        }
        let action = if reasons.is_empty() { Action::Remove } else { Action::Keep };
        decisions.push(Decision { id: s.id, time_ns: s.time_ns, action, reasons });
    }
    Ok(decisions)
}

/// `latest - span` in nanoseconds: years, months and days in calendar
/// terms in `latest`'s zone, then hours as exact time, as restic's
/// `AddDate(-y, -m, -d).Add(-h)`. On overflow the cutoff is the far past
/// (keep everything), which errs towards keeping.
fn within_cutoff_ns(latest: &Zoned, span: WithinSpan) -> i128 {
    let calendar = Span::new()
        .try_years(i64::from(span.years))
        .and_then(|s| s.try_months(i64::from(span.months)))
        .and_then(|s| s.try_days(i64::from(span.days)));
    let cutoff = calendar
        .and_then(|c| latest.checked_sub(c))
        .and_then(|z| Span::new().try_hours(i64::from(span.hours)).and_then(|h| z.checked_sub(h)));
    match cutoff {
        Ok(z) => z.timestamp().as_nanosecond(),
        Err(_) => i128::MIN,
    }
}

/// The tags of a `--keep-tag` value: comma-separated, blanks dropped.
fn tag_list(text: &str) -> Vec<&str> {
    text.split(',').map(str::trim).filter(|t| !t.is_empty()).collect()
}

#[cfg(test)]
// A panic is how a test reports failure.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::snapshot::{SnapshotRecord, SnapshotSummary};
    use crate::id::BlobId;

    /// Sao Paulo from the system's tz database, or its fixed offset (UTC-3,
    /// no DST since 2019) where there is no database.
    fn sao_paulo() -> TimeZone {
        TimeZone::get("America/Sao_Paulo").unwrap_or_else(|_| TimeZone::posix("<-03>3").unwrap())
    }

    fn ns(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_nanosecond() as i64
    }

    /// A snapshot with a one-byte id, time, host, paths and tags.
    fn snap(id: u8, time: &str, host: &str, paths: &[&str], tags: &[&str]) -> Snapshot {
        let t = ns(time);
        Snapshot {
            id: SnapshotId([id; 32]),
            time_ns: t,
            record: SnapshotRecord {
                version: 1,
                time: crate::snapshot::format_time(t),
                tree: BlobId([0; 32]),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                hostname: host.into(),
                username: "u".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                parent: None,
                program_version: "x".into(),
                summary: SnapshotSummary::default(),
                copied_from: None,
                job: None,
            },
        }
    }

    /// Snapshots on host `h` of `/data` at the given UTC times, ids 1, 2, …
    fn series(times: &[&str]) -> Vec<Snapshot> {
        times.iter().enumerate().map(|(i, t)| snap(i as u8 + 1, t, "h", &["/data"], &[])).collect()
    }

    /// Each snapshot as `id: keep (reasons; …)` or `id: remove`, newest first
    /// within each group.
    fn render(plan: &ForgetPlan) -> Vec<String> {
        plan.decisions()
            .map(|d| {
                let id = d.id.0[0];
                match d.action {
                    Action::Remove => format!("{id}: remove"),
                    Action::Keep => {
                        let r: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                        format!("{id}: keep ({})", r.join("; "))
                    }
                }
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        snaps: Vec<Snapshot>,
        policy: Policy,
        holds: &'static [(u8, &'static str)],
        now: &'static str,
        tz: TimeZone,
        want: &'static [&'static str],
    }

    fn check(c: Case) {
        let holds: HashMap<SnapshotId, String> =
            c.holds.iter().map(|(id, why)| (SnapshotId([*id; 32]), why.to_string())).collect();
        let plan = plan_forget(&c.snaps, &c.policy, GroupBy::DEFAULT, &holds, ns(c.now), &c.tz).unwrap();
        let got = render(&plan);
        assert_eq!(got, c.want, "case {}", c.name);
        assert_eq!(plan.n_keep() + plan.n_remove(), c.snaps.len(), "case {}", c.name);
    }

    const NOW: &str = "2027-01-01T00:00:00Z";

    /// Five days, two snapshots a day (UTC), newest last in the input.
    fn ten_over_five_days() -> Vec<Snapshot> {
        series(&[
            "2026-11-20T08:00:00Z",
            "2026-11-20T20:00:00Z",
            "2026-11-21T08:00:00Z",
            "2026-11-21T20:00:00Z",
            "2026-11-22T08:00:00Z",
            "2026-11-22T20:00:00Z",
            "2026-11-23T08:00:00Z",
            "2026-11-23T20:00:00Z",
            "2026-11-24T08:00:00Z",
            "2026-11-24T20:00:00Z",
        ])
    }

    #[test]
    fn single_rules() {
        let cases = vec![
            Case {
                name: "keep-last 3",
                snaps: ten_over_five_days(),
                policy: Policy { keep_last: Some(3), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "10: keep (last 1)",
                    "9: keep (last 2)",
                    "8: keep (last 3)",
                    "7: remove",
                    "6: remove",
                    "5: remove",
                    "4: remove",
                    "3: remove",
                    "2: remove",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-daily 2: newest of each of the last two days",
                snaps: ten_over_five_days(),
                policy: Policy { keep_daily: Some(2), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "10: keep (daily 2026-11-24)",
                    "9: remove",
                    "8: keep (daily 2026-11-23)",
                    "7: remove",
                    "6: remove",
                    "5: remove",
                    "4: remove",
                    "3: remove",
                    "2: remove",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-daily 7 with five days: every day, plus the oldest while counts are left",
                snaps: ten_over_five_days(),
                policy: Policy { keep_daily: Some(7), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "10: keep (daily 2026-11-24)",
                    "9: remove",
                    "8: keep (daily 2026-11-23)",
                    "7: remove",
                    "6: keep (daily 2026-11-22)",
                    "5: remove",
                    "4: keep (daily 2026-11-21)",
                    "3: remove",
                    "2: keep (daily 2026-11-20)",
                    "1: keep (oldest daily 2026-11-20)",
                ],
            },
            Case {
                name: "keep-daily 5 uses up its counts before the oldest",
                snaps: ten_over_five_days(),
                policy: Policy { keep_daily: Some(5), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "10: keep (daily 2026-11-24)",
                    "9: remove",
                    "8: keep (daily 2026-11-23)",
                    "7: remove",
                    "6: keep (daily 2026-11-22)",
                    "5: remove",
                    "4: keep (daily 2026-11-21)",
                    "3: remove",
                    "2: keep (daily 2026-11-20)",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-hourly 2",
                snaps: series(&[
                    "2026-11-24T10:05:00Z",
                    "2026-11-24T10:50:00Z",
                    "2026-11-24T11:10:00Z",
                    "2026-11-24T11:40:00Z",
                    "2026-11-24T12:01:00Z",
                ]),
                policy: Policy { keep_hourly: Some(2), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "5: keep (hourly 2026-11-24T12)",
                    "4: keep (hourly 2026-11-24T11)",
                    "3: remove",
                    "2: remove",
                    "1: remove",
                ],
            },
            Case {
                // 2026-12-27 is a Sunday (ISO week 52); 2026-12-28 a Monday;
                // 2027-01-03 a Sunday in ISO week 2026-W53.
                name: "keep-weekly 3 uses ISO weeks, across a year end",
                snaps: series(&[
                    "2026-12-26T12:00:00Z",
                    "2026-12-27T12:00:00Z",
                    "2026-12-28T12:00:00Z",
                    "2027-01-01T12:00:00Z",
                    "2027-01-03T12:00:00Z",
                    "2027-01-04T12:00:00Z",
                ]),
                policy: Policy { keep_weekly: Some(3), ..Policy::default() },
                holds: &[],
                now: "2027-02-01T00:00:00Z",
                tz: TimeZone::UTC,
                want: &[
                    "6: keep (weekly 2027-W01)",
                    "5: keep (weekly 2026-W53)",
                    "4: remove",
                    "3: remove",
                    "2: keep (weekly 2026-W52)",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-monthly 2 and keep-yearly 2",
                snaps: series(&[
                    "2025-06-01T00:00:00Z",
                    "2025-12-31T12:00:00Z",
                    "2026-10-15T00:00:00Z",
                    "2026-11-01T00:00:00Z",
                    "2026-11-30T00:00:00Z",
                ]),
                policy: Policy { keep_monthly: Some(2), keep_yearly: Some(2), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &[
                    "5: keep (monthly 2026-11; yearly 2026)",
                    "4: remove",
                    "3: keep (monthly 2026-10)",
                    "2: keep (yearly 2025)",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-within 1d is relative to the newest snapshot, not to now",
                snaps: ten_over_five_days(),
                policy: Policy { keep_within: Some("1d".parse().unwrap()), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                // 2026-11-24T20:00 - 1d = 2026-11-23T20:00; strictly newer only.
                want: &[
                    "10: keep (within 1d)",
                    "9: keep (within 1d)",
                    "8: remove",
                    "7: remove",
                    "6: remove",
                    "5: remove",
                    "4: remove",
                    "3: remove",
                    "2: remove",
                    "1: remove",
                ],
            },
            Case {
                name: "keep-within ignores a snapshot from the future as reference",
                snaps: series(&[
                    "2026-11-22T00:00:00Z",
                    "2026-11-23T12:00:00Z",
                    "2026-11-24T00:00:00Z",
                    "2030-01-01T00:00:00Z",
                ]),
                policy: Policy { keep_within: Some("36h".parse().unwrap()), ..Policy::default() },
                holds: &[],
                now: "2026-11-25T00:00:00Z",
                tz: TimeZone::UTC,
                want: &["4: keep (within 36h)", "3: keep (within 36h)", "2: keep (within 36h)", "1: remove"],
            },
            Case {
                name: "keep-within 1m is a calendar month",
                snaps: series(&["2026-02-28T00:00:00Z", "2026-02-28T00:00:01Z", "2026-03-28T00:00:00Z"]),
                policy: Policy { keep_within: Some("1m".parse().unwrap()), ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &["3: keep (within 1m)", "2: keep (within 1m)", "1: remove"],
            },
            Case {
                name: "keep-tag: any of the lists; a list needs all its tags",
                snaps: vec![
                    snap(1, "2026-11-20T00:00:00Z", "h", &["/data"], &["db"]),
                    snap(2, "2026-11-21T00:00:00Z", "h", &["/data"], &["web"]),
                    snap(3, "2026-11-22T00:00:00Z", "h", &["/data"], &["prod", "eu"]),
                    snap(4, "2026-11-23T00:00:00Z", "h", &["/data"], &["prod"]),
                    snap(5, "2026-11-24T00:00:00Z", "h", &["/data"], &[]),
                ],
                policy: Policy { keep_tags: vec!["db".into(), "prod,eu".into()], ..Policy::default() },
                holds: &[],
                now: NOW,
                tz: TimeZone::UTC,
                want: &["5: remove", "4: remove", "3: keep (tag prod,eu)", "2: remove", "1: keep (tag db)"],
            },
        ];
        for c in cases {
            check(c);
        }
    }

    #[test]
    fn combinations_list_every_reason() {
        check(Case {
            name: "last 1 + daily 2 + weekly 2 + tag + within",
            snaps: vec![
                snap(1, "2026-11-09T10:00:00Z", "h", &["/data"], &["db"]),
                snap(2, "2026-11-16T10:00:00Z", "h", &["/data"], &[]),
                snap(3, "2026-11-23T10:00:00Z", "h", &["/data"], &[]),
                snap(4, "2026-11-24T10:00:00Z", "h", &["/data"], &[]),
                snap(5, "2026-11-24T11:00:00Z", "h", &["/data"], &[]),
            ],
            policy: Policy {
                keep_last: Some(1),
                keep_daily: Some(2),
                keep_weekly: Some(2),
                keep_within: Some("1h".parse().unwrap()),
                keep_tags: vec!["db".into()],
                ..Policy::default()
            },
            holds: &[],
            now: NOW,
            tz: TimeZone::UTC,
            // 2026-11-24 is in ISO week 48, 2026-11-16 in 47, 2026-11-09 in 46.
            want: &[
                "5: keep (within 1h; last 1; daily 2026-11-24; weekly 2026-W48)",
                "4: remove",
                "3: keep (daily 2026-11-23)",
                "2: keep (weekly 2026-W47)",
                "1: keep (tag db)",
            ],
        });
    }

    #[test]
    fn daily_across_midnight_in_sao_paulo() {
        // 02:30Z on the 24th is 23:30 on the 23rd in Sao Paulo (UTC-3).
        let snaps = series(&["2026-11-23T20:00:00Z", "2026-11-24T02:30:00Z", "2026-11-24T03:30:00Z"]);
        check(Case {
            name: "sao paulo",
            snaps: snaps.clone(),
            policy: Policy { keep_daily: Some(2), ..Policy::default() },
            holds: &[],
            now: NOW,
            tz: sao_paulo(),
            want: &["3: keep (daily 2026-11-24)", "2: keep (daily 2026-11-23)", "1: remove"],
        });
        check(Case {
            name: "same snapshots in UTC",
            snaps,
            policy: Policy { keep_daily: Some(2), ..Policy::default() },
            holds: &[],
            now: NOW,
            tz: TimeZone::UTC,
            want: &["3: keep (daily 2026-11-24)", "2: remove", "1: keep (daily 2026-11-23)"],
        });
    }

    #[test]
    fn hourly_in_the_repeated_hour_of_a_dst_change() {
        // US Eastern falls back at 2026-11-01 06:00Z: 01:00-01:59 happens
        // twice (05:xxZ EDT, 06:xxZ EST). Like restic, periods are wall
        // clock, so both halves are one hour.
        let tz = TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").unwrap();
        check(Case {
            name: "fall back",
            snaps: series(&["2026-11-01T05:10:00Z", "2026-11-01T06:10:00Z", "2026-11-01T07:10:00Z"]),
            policy: Policy { keep_hourly: Some(2), ..Policy::default() },
            holds: &[],
            now: NOW,
            tz,
            want: &["3: keep (hourly 2026-11-01T02)", "2: keep (hourly 2026-11-01T01)", "1: remove"],
        });
    }

    #[test]
    fn groups_by_host_and_sorted_paths() {
        let snaps = vec![
            snap(1, "2026-11-20T00:00:00Z", "a", &["/x", "/y"], &[]),
            snap(2, "2026-11-21T00:00:00Z", "a", &["/y", "/x"], &[]),
            snap(3, "2026-11-22T00:00:00Z", "b", &["/x", "/y"], &[]),
            snap(4, "2026-11-19T00:00:00Z", "a", &["/x"], &[]),
            snap(5, "2026-11-18T00:00:00Z", "a", &["/x"], &[]),
        ];
        let plan = plan_forget(
            &snaps,
            &Policy { keep_last: Some(1), ..Policy::default() },
            GroupBy::DEFAULT,
            &HashMap::new(),
            ns(NOW),
            &TimeZone::UTC,
        )
        .unwrap();
        let keys: Vec<(String, Vec<String>)> =
            plan.groups.iter().map(|g| (g.key.hostname.clone().unwrap(), g.key.paths.clone().unwrap())).collect();
        assert_eq!(
            keys,
            vec![
                ("a".to_string(), vec!["/x".to_string()]),
                ("a".to_string(), vec!["/x".to_string(), "/y".to_string()]),
                ("b".to_string(), vec!["/x".to_string(), "/y".to_string()]),
            ]
        );
        assert_eq!(
            render(&plan),
            ["4: keep (last 1)", "5: remove", "2: keep (last 1)", "1: remove", "3: keep (last 1)"]
        );
        assert_eq!(plan.remove_ids(), vec![SnapshotId([5; 32]), SnapshotId([1; 32])]);
    }

    #[test]
    fn safety_snapshots_and_jobs_are_groups_of_their_own() {
        let mut snaps = vec![
            snap(1, "2026-11-20T00:00:00Z", "h", &["/srv"], &[]),
            snap(2, "2026-11-21T00:00:00Z", "h", &["/srv"], &["safety"]),
            snap(3, "2026-11-22T00:00:00Z", "h", &["/srv"], &[]),
            snap(4, "2026-11-23T00:00:00Z", "h", &["/srv"], &[]),
        ];
        snaps[3].record.job = Some("files".into());
        let last1 = Policy { keep_last: Some(1), ..Policy::default() };
        let plan = plan_forget(&snaps, &last1, GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap();
        assert_eq!(render(&plan), ["4: keep (last 1)", "3: remove", "1: remove", "2: keep (last 1)"]);
        let by_job: GroupBy = "host,paths,job".parse().unwrap();
        let plan = plan_forget(&snaps, &last1, by_job, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap();
        assert_eq!(render(&plan), ["3: keep (last 1)", "1: remove", "2: keep (last 1)", "4: keep (last 1)"]);
    }

    #[test]
    fn forget_by_id_removes_the_named_and_refuses_a_held_one() {
        let snaps = ten_over_five_days();
        let named = [&snaps[2], &snaps[5], &snaps[2]];
        let plan = plan_remove(&named, GroupBy::DEFAULT, &HashMap::new()).unwrap();
        assert_eq!(plan.remove_ids(), vec![snaps[5].id, snaps[2].id]);
        let holds = HashMap::from([(snaps[5].id, "case 7".to_string())]);
        let err = plan_remove(&named, GroupBy::DEFAULT, &holds).unwrap_err().to_string();
        assert!(err.contains("case 7") && err.contains("hold"), "{err}");
    }

    proptest::proptest! {
        /// Whatever the policy, a group's decisions depend on its own
        /// snapshots only: planning one group alone decides the same.
        #[test]
        fn a_group_is_planned_as_if_alone(
            seeds in proptest::collection::vec((0u8..3, 0u8..3, 0u8..2, 0i64..2_000), 1..40),
            last in 0u32..4,
            daily in 0u32..4,
        ) {
            let policy = Policy { keep_last: Some(last), keep_daily: Some(daily.max(1)), ..Policy::default() };
            let snaps: Vec<Snapshot> = seeds
                .iter()
                .enumerate()
                .map(|(i, (host, path, safety, hours))| {
                    let tags: &[&str] = if *safety == 1 { &["safety"] } else { &[] };
                    let mut s = snap(0, "2026-01-01T00:00:00Z", &format!("h{host}"), &[&format!("/p{path}")], tags);
                    s.id.0[0] = i as u8;
                    s.time_ns += hours * 3_600_000_000_000;
                    s
                })
                .collect();
            let all = plan_forget(&snaps, &policy, GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap();
            for g in &all.groups {
                let members: Vec<Snapshot> =
                    snaps.iter().filter(|s| GroupBy::DEFAULT.key(&s.record) == g.key).cloned().collect();
                let alone =
                    plan_forget(&members, &policy, GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap();
                proptest::prop_assert_eq!(alone.groups.len(), 1);
                proptest::prop_assert_eq!(&alone.groups[0], g);
            }
            proptest::prop_assert_eq!(all.decisions().count(), snaps.len());
        }
    }

    #[test]
    fn holds_are_kept_and_do_not_count() {
        check(Case {
            name: "hold on a snapshot the policy removes, and on one it keeps",
            snaps: ten_over_five_days(),
            policy: Policy { keep_daily: Some(1), ..Policy::default() },
            holds: &[(3, "legal case 42"), (10, "pre-deploy")],
            now: NOW,
            tz: TimeZone::UTC,
            want: &[
                "10: keep (hold: pre-deploy; daily 2026-11-24)",
                "9: remove",
                "8: remove",
                "7: remove",
                "6: remove",
                "5: remove",
                "4: remove",
                "3: keep (hold: legal case 42)",
                "2: remove",
                "1: remove",
            ],
        });
    }

    #[test]
    fn empty_policies_are_refused() {
        let snaps = ten_over_five_days();
        let zeroes = Policy {
            keep_last: Some(0),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            keep_within: Some(WithinSpan::default()),
            keep_tags: vec![" , ".into()],
        };
        for p in [Policy::default(), zeroes] {
            assert!(p.is_empty(), "{p:?}");
            let err = plan_forget(&snaps, &p, GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap_err();
            assert!(err.to_string().contains("no retention policy"), "{err}");
        }
        // Even with no snapshots at all.
        assert!(plan_forget(&[], &Policy::default(), GroupBy::DEFAULT, &HashMap::new(), 0, &TimeZone::UTC).is_err());
        // One zero rule beside a real one is fine (the basic plan's yearly 0).
        let p = Policy { keep_yearly: Some(0), keep_daily: Some(1), ..Policy::default() };
        assert_eq!(
            plan_forget(&snaps, &p, GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC).unwrap().n_keep(),
            1
        );
    }

    #[test]
    fn plans_and_their_policies() {
        let b = Plan::Basic.policy();
        assert_eq!((b.keep_daily, b.keep_weekly, b.keep_monthly, b.keep_yearly), (Some(7), Some(4), Some(3), Some(0)));
        let p = Plan::Pro.policy();
        assert_eq!(
            (p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly),
            (Some(30), Some(12), Some(12), Some(2))
        );
        let e = Plan::Enterprise.policy();
        assert_eq!(
            (e.keep_daily, e.keep_weekly, e.keep_monthly, e.keep_yearly),
            (Some(60), Some(24), Some(24), Some(5))
        );
        for plan in Plan::ALL {
            assert_eq!(plan.name().parse::<Plan>().unwrap(), plan);
            assert!(!plan.policy().is_empty());
        }
        assert!("gold".parse::<Plan>().is_err());
        assert_eq!(b.to_string(), "keep daily 7, weekly 4, monthly 3");
        let o = b.overlay(&Policy { keep_daily: Some(2), keep_tags: vec!["db".into()], ..Policy::default() });
        assert_eq!(o.to_string(), "keep daily 2, weekly 4, monthly 3, tag db");
    }

    #[test]
    fn basic_plan_over_a_year_of_dailies() {
        // One snapshot a day at 12:00Z through 2026: daily 7, weekly 4,
        // monthly 3, yearly 0.
        let start = ns("2026-01-01T12:00:00Z");
        let snaps: Vec<Snapshot> = (0..365i64)
            .map(|d| {
                let t = start + d * 86_400 * 1_000_000_000;
                let mut s = snap(0, "2026-01-01T00:00:00Z", "h", &["/data"], &[]);
                s.id.0[0] = (d % 256) as u8;
                s.id.0[1] = (d / 256) as u8;
                s.time_ns = t;
                s
            })
            .collect();
        let plan =
            plan_forget(&snaps, &Plan::Basic.policy(), GroupBy::DEFAULT, &HashMap::new(), ns(NOW), &TimeZone::UTC)
                .unwrap();
        let kept: Vec<String> = plan
            .decisions()
            .filter(|d| d.action == Action::Keep)
            .map(|d| crate::snapshot::format_time(d.time_ns)[..10].to_string())
            .collect();
        // Dec 25-31 daily; weeks 53 (Dec 28-31), 52, 51, 50 end on Sundays
        // Dec 27, Dec 20, Dec 13; months Dec, Nov, Oct.
        assert_eq!(
            kept,
            [
                "2026-12-31",
                "2026-12-30",
                "2026-12-29",
                "2026-12-28",
                "2026-12-27",
                "2026-12-26",
                "2026-12-25",
                "2026-12-20",
                "2026-12-13",
                "2026-11-30",
                "2026-10-31"
            ]
        );
    }

    #[test]
    fn within_spans_parse_like_restic() {
        let p = |s: &str| s.parse::<WithinSpan>();
        assert_eq!(p("7d").unwrap(), WithinSpan { days: 7, ..WithinSpan::default() });
        assert_eq!(p("1y2m").unwrap(), WithinSpan { years: 1, months: 2, ..WithinSpan::default() });
        assert_eq!(p("3d12h").unwrap(), WithinSpan { days: 3, hours: 12, ..WithinSpan::default() });
        assert_eq!(p("1y5m7d2h").unwrap().to_string(), "1y5m7d2h");
        for bad in ["", "7", "d", "7w", "-1d", "1.5d", "99999999999d"] {
            assert!(p(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn no_snapshots_no_decisions() {
        let plan =
            plan_forget(&[], &Plan::Basic.policy(), GroupBy::DEFAULT, &HashMap::new(), 0, &TimeZone::UTC).unwrap();
        assert!(plan.groups.is_empty());
    }
}
