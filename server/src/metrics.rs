//! `/metrics` in the Prometheus text format: counters kept in atomics so
//! the login path pays one relaxed increment per request.

use crate::api::ApiError;
use clinauth_proto::workstation::FinishResponse;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the finish latency histogram, in milliseconds.
const BUCKETS_MS: [u64; 8] = [1, 2, 5, 10, 25, 50, 100, 500];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    begin_ok: AtomicU64,
    begin_refused: AtomicU64,
    finish_allow: AtomicU64,
    finish_deny: AtomicU64,
    finish_refused: AtomicU64,
    finish_buckets: [AtomicU64; BUCKETS_MS.len()],
    finish_count: AtomicU64,
    finish_sum_us: AtomicU64,
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
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.finish_buckets) {
            if ms <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.finish_count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.finish_sum_us.fetch_add(us, Ordering::Relaxed);
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
        for (bound, bucket) in BUCKETS_MS.iter().zip(&self.finish_buckets) {
            let _ = writeln!(
                out,
                "clinauth_auth_finish_seconds_bucket{{le=\"{}\"}} {}",
                *bound as f64 / 1000.0,
                get(bucket)
            );
        }
        let count = get(&self.finish_count);
        let _ = writeln!(
            out,
            "clinauth_auth_finish_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "clinauth_auth_finish_seconds_sum {}",
            get(&self.finish_sum_us) as f64 / 1e6
        );
        let _ = writeln!(out, "clinauth_auth_finish_seconds_count {count}");
        out
    }
}
