//! `/metrics` in the Prometheus text format: counters kept in atomics so
//! the login path pays one relaxed increment per request.

use crate::api::ApiError;
use clinauth_proto::workstation::FinishResponse;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histograms, in milliseconds.
const BUCKETS_MS: [u64; 9] = [1, 2, 5, 10, 25, 50, 100, 500, 1000];

/// A latency histogram in atomics.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, took: Duration) {
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.buckets) {
            if took <= Duration::from_millis(*bound) {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Its series `name{labels,le=…}`, `name_sum`, `name_count`, without
    /// the HELP and TYPE lines.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {}",
                *bound as f64 / 1000.0,
                get(bucket)
            );
        }
        let count = get(&self.count);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", get(&self.sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    begin_ok: AtomicU64,
    begin_refused: AtomicU64,
    finish_allow: AtomicU64,
    finish_deny: AtomicU64,
    finish_refused: AtomicU64,
    finish: Histogram,
    /// Group commits of decisions, answered once on disk.
    commit_durable: Histogram,
    /// Group commits of begins, synced by the next durable one.
    commit_deferred: Histogram,
    committed_plans: AtomicU64,
}

impl Metrics {
    /// Counts a begin.
    pub fn count_begin(&self, ok: bool) {
        let c = if ok {
            &self.begin_ok
        } else {
            &self.begin_refused
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finish and its latency.
    pub fn count_finish(&self, result: &Result<FinishResponse, ApiError>, took: Duration) {
        let c = match result {
            Ok(FinishResponse::Allow { .. }) => &self.finish_allow,
            Ok(FinishResponse::Deny { .. }) => &self.finish_deny,
            Err(_) => &self.finish_refused,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.finish.observe(took);
    }

    /// Counts a group commit of `plans` requests' writes (`auth::commit`),
    /// durable (`true`: answered once on disk) or deferred (begins).
    pub fn count_commit(&self, durable: bool, plans: usize, took: Duration) {
        let h = if durable {
            &self.commit_durable
        } else {
            &self.commit_deferred
        };
        h.observe(took);
        self.committed_plans
            .fetch_add(u64::try_from(plans).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP clinauth_auth_begin_total Authentication begins."
        );
        let _ = writeln!(out, "# TYPE clinauth_auth_begin_total counter");
        let _ = writeln!(
            out,
            "clinauth_auth_begin_total{{outcome=\"ok\"}} {}",
            get(&self.begin_ok)
        );
        let _ = writeln!(
            out,
            "clinauth_auth_begin_total{{outcome=\"refused\"}} {}",
            get(&self.begin_refused)
        );
        let _ = writeln!(
            out,
            "# HELP clinauth_auth_finish_total Authentication decisions."
        );
        let _ = writeln!(out, "# TYPE clinauth_auth_finish_total counter");
        for (label, v) in [
            ("allow", &self.finish_allow),
            ("deny", &self.finish_deny),
            ("refused", &self.finish_refused),
        ] {
            let _ = writeln!(
                out,
                "clinauth_auth_finish_total{{outcome=\"{label}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP clinauth_auth_finish_seconds Time to answer a finish."
        );
        let _ = writeln!(out, "# TYPE clinauth_auth_finish_seconds histogram");
        self.finish
            .render(&mut out, "clinauth_auth_finish_seconds", "");
        let _ = writeln!(
            out,
            "# HELP clinauth_db_commit_seconds Group commits of the login path: writing a batch and, when durable, syncing it to disk (the disk's latency shows here)."
        );
        let _ = writeln!(out, "# TYPE clinauth_db_commit_seconds histogram");
        self.commit_durable
            .render(&mut out, "clinauth_db_commit_seconds", "durability=\"now\"");
        self.commit_deferred.render(
            &mut out,
            "clinauth_db_commit_seconds",
            "durability=\"deferred\"",
        );
        let _ = writeln!(
            out,
            "# HELP clinauth_db_committed_plans_total Requests whose writes were group-committed (divide by the commits for the batch size)."
        );
        let _ = writeln!(out, "# TYPE clinauth_db_committed_plans_total counter");
        let _ = writeln!(
            out,
            "clinauth_db_committed_plans_total {}",
            get(&self.committed_plans)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_at_most_each_bound() {
        let m = Metrics::default();
        m.count_commit(true, 3, Duration::from_micros(1_000));
        m.count_commit(true, 4, Duration::from_micros(1_500));
        m.count_commit(false, 2, Duration::from_micros(200));
        let text = m.render();
        for line in [
            "clinauth_db_commit_seconds_bucket{durability=\"now\",le=\"0.001\"} 1",
            "clinauth_db_commit_seconds_bucket{durability=\"now\",le=\"0.002\"} 2",
            "clinauth_db_commit_seconds_bucket{durability=\"now\",le=\"+Inf\"} 2",
            "clinauth_db_commit_seconds_count{durability=\"now\"} 2",
            "clinauth_db_commit_seconds_sum{durability=\"now\"} 0.0025",
            "clinauth_db_commit_seconds_bucket{durability=\"deferred\",le=\"0.001\"} 1",
            "clinauth_db_committed_plans_total 9",
            "clinauth_auth_finish_seconds_bucket{le=\"+Inf\"} 0",
            "clinauth_auth_finish_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
