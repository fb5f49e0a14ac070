//! What the operating system tells about this process and the server's:
//! a clock shared by every process on the machine, CPU time, RSS, and the
//! open-file limit.

use std::time::Duration;

/// Microseconds on CLOCK_MONOTONIC. Unlike `Instant`, the value means the
/// same in every process on the machine, so a timestamp written into a
/// message by one worker process can be subtracted by another.
pub fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The tokio instant at which the shared clock reads `at_us`.
pub fn instant_at(at_us: u64) -> tokio::time::Instant {
    let now_us = mono_us();
    let now = tokio::time::Instant::now();
    if at_us >= now_us {
        now + Duration::from_micros(at_us - now_us)
    } else {
        now.checked_sub(Duration::from_micros(now_us - at_us))
            .unwrap_or(now)
    }
}

/// Sleep until the shared clock reads `at_us`.
pub async fn sleep_until_us(at_us: u64) {
    tokio::time::sleep_until(instant_at(at_us)).await;
}

/// User + system CPU time this process has used, in microseconds.
pub fn self_cpu_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Peak resident set of this process, in KiB.
pub fn self_max_rss_kib() -> u64 {
    // SAFETY: as above.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    ru.ru_maxrss.max(0) as u64
}

/// Raise the soft open-file limit to the hard limit, so one process can hold
/// as many sockets as the machine allows; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

/// One look at a server process in /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSample {
    /// Resident set of the process itself, KiB (`VmRSS`).
    pub rss_kib: u64,
    /// utime + stime of the process and all its live descendants, in
    /// microseconds: Postgres and Redis work in child processes.
    pub cpu_us: u64,
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// `(ppid, utime + stime in ticks)` from /proc/<pid>/stat.
fn stat_of(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// The RSS of `pid` in KiB, if it is alive.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The command name of `pid`.
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Sample `pid` and its descendants.
pub fn sample(pid: u32) -> Option<ProcSample> {
    sample_many(&[pid]).pop().flatten()
}

/// Sample each of `pids` (with its descendants) from one pass over /proc.
pub fn sample_many(pids: &[u32]) -> Vec<Option<ProcSample>> {
    if pids.is_empty() {
        return Vec::new();
    }
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some((ppid, ticks)) = stat_of(p) {
                all.push((p, ppid, ticks));
            }
        }
    }
    let per_s = clock_ticks_per_s();
    pids.iter()
        .map(|&pid| {
            let rss_kib = rss_kib(pid)?;
            let mut tree = vec![pid];
            let mut ticks = 0u64;
            let mut i = 0;
            while i < tree.len() {
                let parent = tree[i];
                for &(p, pp, t) in &all {
                    if p == parent {
                        ticks += t;
                    }
                    if pp == parent && p != parent {
                        tree.push(p);
                    }
                }
                i += 1;
            }
            Some(ProcSample {
                rss_kib,
                cpu_us: ticks * 1_000_000 / per_s,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let s = sample(me).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(rss_kib(me).is_some());
        assert!(mono_us() > 0);
        assert!(raise_nofile_limit() > 0);
        let _ = self_cpu_us();
    }
}
