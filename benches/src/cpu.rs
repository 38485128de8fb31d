//! CPU time of this process and of some of its threads, from `/proc`, so a
//! benchmark that runs clients and brokers in one process can say how much
//! of the machine the brokers used: the process's time, less the time of
//! the client's threads.
//!
//! Linux only; elsewhere every reading is zero and the figures derived from
//! it say so (NaN).

use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on every Linux
/// architecture Lapse runs on).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system time from a `/proc/.../stat` line: fields 14 and 15,
/// counted after the command name (which may hold spaces, so the line is
/// split after its last `)`).
fn stat_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU time (user and system) of the whole process, threads that have
/// exited included.
pub fn process_cpu() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat))
        .unwrap_or_default()
}

/// CPU time (user and system) of the calling thread.
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| stat_cpu(&stat))
        .unwrap_or_default()
}

/// CPU time of the live threads of this process whose name starts with
/// `prefix`, and of the main thread when `main` is set.
pub fn threads_cpu(prefix: &str, main: bool) -> Duration {
    let pid = std::process::id().to_string();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let is_main = task.file_name().to_str() == Some(pid.as_str());
            (name.starts_with(prefix) || (main && is_main))
                .then(|| std::fs::read_to_string(dir.join("stat")).ok())
                .flatten()
                .and_then(|stat| stat_cpu(&stat))
        })
        .sum()
}

/// A reading of the process's CPU time and of the client's share of it.
#[derive(Debug, Clone, Copy)]
pub struct CpuReading {
    process: Duration,
    client: Duration,
}

impl CpuReading {
    /// Read now; the client is the main thread and every thread whose name
    /// starts with `client_prefix`.
    pub fn now(client_prefix: &str) -> Self {
        Self {
            process: process_cpu(),
            client: threads_cpu(client_prefix, true),
        }
    }

    /// CPU time used since `earlier` by everything but the client.
    pub fn others_since(&self, earlier: &CpuReading) -> Duration {
        let process = self.process.saturating_sub(earlier.process);
        process.saturating_sub(self.client.saturating_sub(earlier.client))
    }

    /// CPU time used since `earlier` by the client.
    pub fn client_since(&self, earlier: &CpuReading) -> Duration {
        self.client.saturating_sub(earlier.client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_and_system_time_after_a_name_with_spaces() {
        let line = "4242 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(stat_cpu(line), Some(Duration::from_secs(3)));
    }

    #[test]
    fn this_process_and_a_named_thread_use_some_time() {
        if !cfg!(target_os = "linux") {
            return;
        }
        // Spin on a thread of a known name until the clock it is read by
        // (10 ms ticks) moves, however busy the machine: the fact, not a
        // time, is what the test waits for.
        let started = process_cpu();
        let spinner = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                let mut x = 0u64;
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while threads_cpu("cpu-test-spin", false).is_zero() || thread_cpu().is_zero() {
                    assert!(std::time::Instant::now() < deadline, "no CPU time in 60 s");
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                }
                x
            })
            .unwrap();
        spinner.join().unwrap();
        assert!(process_cpu() > started);
    }
}
