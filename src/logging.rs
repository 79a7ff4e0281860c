//! Log output: text or JSON lines on stderr, with a level filter a reload can change.
//!
//! Text lines carry ANSI colours only when stderr is a terminal: a file, a pipe or the
//! journal gets plain text. JSON is always one object per line, without colour codes.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

use crate::config::{Log, LogFormat};

/// Swaps the level filter of the installed subscriber (`tracing_subscriber::reload`):
/// the layers after it, and every span and event in flight, are untouched.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the process's subscriber. A second call (tests that run `serve::run` twice
/// in one process) keeps the first subscriber.
pub fn init(log: &Log) -> Result<(), tracing_subscriber::filter::ParseError> {
    // `EnvFilter::try_new` parses the configured directives only; it does not read
    // RUST_LOG (config flows one way). `validate()` has already checked them.
    let filter = EnvFilter::try_new(&log.level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let installed = match log.format {
        LogFormat::Text => Registry::default()
            .with(filter)
            .with(fmt::layer().with_writer(std::io::stderr).with_ansi(ansi))
            .try_init(),
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .try_init(),
    };
    match installed {
        Ok(()) => {
            let _ = FILTER.set(handle);
        }
        Err(e) => tracing::debug!("tracing subscriber already set: {e}"),
    }
    Ok(())
}

/// Applies a reloaded `log.level` to the subscriber [`init`] installed.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log level: {e}")),
        // Another subscriber was installed first (tests): nothing of ours to change.
        None => Ok(()),
    }
}

/// Logs every panic through the subscriber, as one error event naming the thread, the
/// place and the message (with a backtrace when `RUST_BACKTRACE` asks for one), so a
/// panic shows in the relay's log in its format (JSON included) rather than as loose
/// lines on stderr.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(not a string)");
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, location, %backtrace, "panic: {message}");
        } else {
            tracing::error!(thread, location, "panic: {message}");
        }
    }));
}
