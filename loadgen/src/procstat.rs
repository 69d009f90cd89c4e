//! CPU time and memory from /proc (Linux): the server's share of a run in
//! this process is the process's CPU time minus that of the load
//! generator's own threads (named `lg-client`), plus, for PostgreSQL, the
//! CPU time of the local `postgres` processes.

use std::path::Path;

/// Clock ticks per second of /proc's CPU times (USER_HZ, 100 on Linux).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The thread name prefix of the load generator's own threads.
pub const CLIENT_THREAD: &str = "lg-client";

/// utime + stime (ticks) from the text of a `stat` file.
fn stat_ticks(text: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn read_ticks(path: &Path) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(path).ok()?)
}

/// CPU ticks of a process (all its threads, including exited ones).
pub fn process_ticks(pid: &str) -> Option<u64> {
    read_ticks(&Path::new("/proc").join(pid).join("stat"))
}

/// CPU ticks of the calling thread.
pub fn this_thread_ticks() -> Option<u64> {
    read_ticks(Path::new("/proc/thread-self/stat"))
}

/// CPU ticks of this process's threads whose name starts with `prefix`.
pub fn thread_ticks(prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map(|c| c.starts_with(prefix))
                .unwrap_or(false)
        })
        .filter_map(|t| read_ticks(&t.path().join("stat")))
        .sum()
}

/// CPU ticks of every process named `postgres` on this host (server,
/// backends, WAL writer, checkpointer...).
pub fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|p| {
            p.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|p| {
            std::fs::read_to_string(p.path().join("comm"))
                .map(|c| c.trim_end() == "postgres")
                .unwrap_or(false)
        })
        .filter_map(|p| read_ticks(&p.path().join("stat")))
        .sum()
}

/// A `Vm…` line of /proc/<pid>/status, in KiB.
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid).join("status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Which CPU time counts as the server's.
#[derive(Debug, Clone)]
pub enum ServerCpu {
    /// The server runs in this process: everything but the `lg-client` threads.
    InProcess {
        /// Add the local PostgreSQL processes.
        postgres: bool,
    },
    /// Another process on this host.
    Pid {
        /// Its PID.
        pid: String,
        /// Add the local PostgreSQL processes.
        postgres: bool,
    },
    /// Unknown (a remote server).
    None,
}

/// A reading of CPU counters (ticks).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// The server's process (or this process minus the client threads).
    pub server: u64,
    /// The local PostgreSQL processes.
    pub postgres: u64,
    /// The load generator's own threads.
    pub client: u64,
}

impl ServerCpu {
    /// Reads the counters now.
    pub fn sample(&self) -> CpuSample {
        match self {
            ServerCpu::InProcess { postgres } => {
                let client = thread_ticks(CLIENT_THREAD);
                let all = process_ticks("self").unwrap_or(0);
                CpuSample {
                    server: all.saturating_sub(client),
                    postgres: if *postgres { postgres_ticks() } else { 0 },
                    client,
                }
            }
            ServerCpu::Pid { pid, postgres } => CpuSample {
                server: process_ticks(pid).unwrap_or(0),
                postgres: if *postgres { postgres_ticks() } else { 0 },
                client: process_ticks("self").unwrap_or(0),
            },
            ServerCpu::None => CpuSample {
                client: process_ticks("self").unwrap_or(0),
                ..CpuSample::default()
            },
        }
    }

    /// Whether the server's CPU time is known.
    pub fn known(&self) -> bool {
        !matches!(self, ServerCpu::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_names() {
        let text = "123 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";
        assert_eq!(stat_ticks(text), Some(300));
        assert!(process_ticks("self").is_some());
        assert!(status_kib("self", "VmHWM").is_some_and(|k| k > 0));
    }
}
