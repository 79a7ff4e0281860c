//! systemd's readiness protocol (sd_notify(3)): `READY=1`, `RELOADING=1`, `STOPPING=1`,
//! `STATUS=…` and watchdog keep-alives, sent as datagrams to the unix socket systemd
//! names in `NOTIFY_SOCKET` when it runs the service with `Type=notify`.
//!
//! The protocol is one `sendto` of `KEY=VALUE` lines, so it is written here over std's
//! `UnixDatagram` rather than with a crate (no maintained one is among the packages
//! this project draws on, and libsystemd would be a C dependency for one syscall).
//! The environment is read once, at start-up ([`Notifier::from_env`]); without
//! `NOTIFY_SOCKET` every call does nothing.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where to send notifications, read from the environment once.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<SocketAddr>,
    /// Half of `WATCHDOG_USEC` when systemd expects keep-alives from this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            match socket_addr(&path) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    tracing::warn!("NOTIFY_SOCKET={path:?} is not usable: {e}");
                    None
                }
            }
        });
        // WATCHDOG_PID, when set, names the process the watchdog is for: a child that
        // inherited the environment must not answer for its parent.
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            // sd_watchdog_enabled(3): send keep-alives at half the interval.
            .map(|usec| Duration::from_micros(usec / 2));
        Notifier { target, watchdog }
    }

    /// Whether a notification socket was given.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`, when systemd's watchdog is on for us.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.enabled())
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines). A failure is logged, never
    /// fatal: the relay works the same without systemd listening.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else {
            return;
        };
        let sent =
            UnixDatagram::unbound().and_then(|sock| sock.send_to_addr(state.as_bytes(), target));
        if let Err(e) = sent {
            tracing::warn!("sd_notify {:?}: {e}", state.lines().next().unwrap_or(""));
        }
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (sd_notify(3): systemd matches the reload to
    /// the `READY=1` that follows by it).
    pub fn reloading(&self) {
        let usec = monotonic_usec();
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
        ));
    }
}

/// `@name` is a socket in the abstract namespace (sd_notify(3)); anything else a path.
fn socket_addr(path: &str) -> io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock `MONOTONIC_USEC` is read on.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we own; CLOCK_MONOTONIC
    // always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}
