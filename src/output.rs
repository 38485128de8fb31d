//! What the command line writes for people: print macros that survive a
//! closed pipe, and moments in time shown as RFC 3339 plus how far off.
//!
//! The standard `println!` panics when standard output is a pipe whose
//! reader has gone (`lapse audit | head`). `main.rs` declares this module
//! first with `#[macro_use]`, so the `print!`, `println!`, `eprint!` and
//! `eprintln!` below replace the standard ones in every module of the
//! binary: a closed standard output ends the process quietly with status 0
//! (what a shell expects of a command at the head of a pipeline), and a
//! standard error that cannot be written is ignored (there is nowhere left
//! to say so).

use std::fmt;
use std::io::{ErrorKind, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// Without the `sim` feature nothing calls `print!` or `eprint!`.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

macro_rules! println {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!($($arg)*))
    };
}

macro_rules! eprintln {
    () => {
        $crate::output::write_stderr(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Write to standard output; exit 0 if its reader has gone.
pub fn write_stdout(text: fmt::Arguments) {
    let Err(error) = std::io::stdout().lock().write_fmt(text) else {
        return;
    };
    if error.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // A full disk behind a redirect, say: the output is incomplete, so
    // this is a failure, but not a reason for a panic and a backtrace.
    write_stderr(format_args!(
        "error: cannot write to standard output: {error}\n"
    ));
    std::process::exit(i32::from(crate::client::exit::FAILURE));
}

/// Write to standard error, ignoring failure.
pub fn write_stderr(text: fmt::Arguments) {
    let _ = std::io::stderr().lock().write_fmt(text);
}

/// A moment for people: `2026-11-30T12:00:00Z, in 10 min` or
/// `2026-11-30T11:57:00.250Z, 3 min ago`. Used for every time the text
/// output shows; `--json` output keeps the raw numbers.
pub fn moment(at_ms: u64) -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    describe_moment(at_ms, now_ms)
}

/// Last millisecond RFC 3339 can show (the end of year 9999).
const LAST_SHOWN_MS: u64 = 253_402_300_800_000 - 1;

/// [`moment`] against a given `now_ms`. Whole seconds are shown without
/// a fraction, anything else to the millisecond.
pub fn describe_moment(at_ms: u64, now_ms: u64) -> String {
    if at_ms > LAST_SHOWN_MS {
        return format!("{at_ms} ms after 1970 (beyond year 9999)");
    }
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    let absolute = if at_ms % 1000 == 0 {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        humantime::format_rfc3339_millis(at).to_string()
    };
    let distance = span(at_ms.abs_diff(now_ms));
    let relative = if at_ms.abs_diff(now_ms) < 1000 {
        "now".to_owned()
    } else if at_ms > now_ms {
        format!("in {distance}")
    } else {
        format!("{distance} ago")
    };
    format!("{absolute}, {relative}")
}

/// A duration rounded to its largest sensible unit: `42 s`, `10 min`,
/// `5 h`, `3 days`.
fn span(ms: u64) -> String {
    let rounded = |unit_ms: u64| (ms + unit_ms / 2) / unit_ms;
    let seconds = rounded(1000);
    if seconds < 60 {
        return format!("{seconds} s");
    }
    let minutes = rounded(60_000);
    if minutes < 60 {
        return format!("{minutes} min");
    }
    let hours = rounded(3_600_000);
    if hours < 48 {
        return format!("{hours} h");
    }
    format!("{} days", rounded(86_400_000))
}

#[cfg(test)]
mod tests {
    use super::describe_moment;

    /// 2026-11-30T12:00:00Z.
    const NOON_MS: u64 = 1_796_040_000_000;

    #[test]
    fn moments_are_rfc3339_utc_with_a_relative_phrase() {
        let cases = [
            (NOON_MS + 600_000, "2026-11-30T12:10:00Z, in 10 min"),
            (NOON_MS - 180_000, "2026-11-30T11:57:00Z, 3 min ago"),
            (NOON_MS + 599_400, "2026-11-30T12:09:59.400Z, in 10 min"),
            (NOON_MS + 300, "2026-11-30T12:00:00.300Z, now"),
            (NOON_MS, "2026-11-30T12:00:00Z, now"),
            (NOON_MS - 42_000, "2026-11-30T11:59:18Z, 42 s ago"),
            (NOON_MS + 59_600, "2026-11-30T12:00:59.600Z, in 1 min"),
            (NOON_MS + 3_590_000, "2026-11-30T12:59:50Z, in 1 h"),
            (NOON_MS + 5 * 3_600_000, "2026-11-30T17:00:00Z, in 5 h"),
            (NOON_MS - 3 * 86_400_000, "2026-11-27T12:00:00Z, 3 days ago"),
            (0, "1970-01-01T00:00:00Z, 20788 days ago"),
        ];
        for (at_ms, expected) in cases {
            assert_eq!(describe_moment(at_ms, NOON_MS), expected, "{at_ms}");
        }
    }

    #[test]
    fn moments_beyond_year_9999_do_not_panic() {
        assert_eq!(
            describe_moment(u64::MAX, NOON_MS),
            format!("{} ms after 1970 (beyond year 9999)", u64::MAX)
        );
    }
}
