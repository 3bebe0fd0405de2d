//! CPU time and peak memory of processes, read from `/proc`.
//!
//! CPU time is cumulative, so a measured phase is the difference of two readings. Peak RSS
//! (`VmHWM`) is the high-water mark over the process's life; the harness starts fresh
//! processes for every run, so the life is the run.

use std::path::Path;

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct ProcSample {
    /// User plus system CPU seconds the process itself used.
    pub(crate) cpu_seconds: f64,
    /// CPU seconds of its children that it has waited for.
    pub(crate) reaped_children_seconds: f64,
    /// Peak resident set size, in kB.
    pub(crate) peak_rss_kb: u64,
}

/// The kernel's clock ticks per second, the unit of the CPU fields of `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // Linux has exported 100 ticks per second to user space on every architecture for
        // decades; only a failing sysconf gets here.
        _ => 100.0,
    }
}

/// Reads one process, or `None` if it is gone or unreadable.
pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let fields = parse_stat(&stat)?;
    let tck = ticks_per_second();
    Some(ProcSample {
        cpu_seconds: (fields.utime + fields.stime) as f64 / tck,
        reaped_children_seconds: (fields.cutime + fields.cstime) as f64 / tck,
        peak_rss_kb: parse_vm_hwm_kb(&status).unwrap_or(0),
    })
}

/// CPU seconds used by a PostgreSQL server: the postmaster, its live children (backends,
/// checkpointer, WAL writer…) and the children it has already reaped, such as the backends
/// of closed connections.
pub(crate) fn postgres_cpu_seconds(postmaster: u32) -> Option<f64> {
    let own = sample(postmaster)?;
    let mut total = own.cpu_seconds + own.reaped_children_seconds;
    let tck = ticks_per_second();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(fields) = parse_stat(&stat)
            && fields.ppid == postmaster
            && pid != postmaster
        {
            total += (fields.utime + fields.stime) as f64 / tck;
        }
    }
    Some(total)
}

/// The parent of a process, to find the postmaster from one of its backends.
pub(crate) fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|f| f.ppid)
}

/// The fields of `/proc/<pid>/stat` the harness uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatFields {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<StatFields> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name: state(3) ppid(4) … utime(14) stime(15) cutime(16) cstime(17).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
    Some(StatFields {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: u64::try_from(field(14)?).ok()?,
        stime: u64::try_from(field(15)?).ok()?,
        cutime: u64::try_from(field(16)?).unwrap_or(0),
        cstime: u64::try_from(field(17)?).unwrap_or(0),
    })
}

fn parse_vm_hwm_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) w) S 17 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 75 12 3 20 0 8 0 1000 123456 789 18446744073709551615";

        let fields = parse_stat(stat).unwrap();

        assert_eq!(
            fields,
            StatFields {
                ppid: 17,
                utime: 250,
                stime: 75,
                cutime: 12,
                cstime: 3
            }
        );
    }

    #[test]
    fn peak_rss_comes_from_vm_hwm() {
        let status =
            "Name:\tquantumflow\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t 40000 kB\n";

        assert_eq!(parse_vm_hwm_kb(status), Some(51234));
        assert_eq!(parse_vm_hwm_kb("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let me = sample(std::process::id()).unwrap();

        assert!(me.peak_rss_kb > 0);
        assert!(me.cpu_seconds >= 0.0);
    }
}
