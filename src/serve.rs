//! `turnpike serve`: the entry point the lead wires to the relay, signaling and metrics.
//!
//! `main` hands over validated [`Settings`]; this is the place where they turn into
//! running components. For now it only sets up logging and reports what it would run.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, Settings};

/// Run the relay with `settings` until it is told to stop.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    init_tracing(&settings)?;
    // `Settings`' Debug output redacts passwords and secrets (see `config::Secret`).
    tracing::info!(settings = ?settings, "effective settings");
    if settings.auth.users.is_empty() && settings.auth.secrets.is_empty() {
        tracing::warn!(
            "no auth.users and no auth.secrets: every TURN request will be refused \
             (STUN binding still answers)"
        );
    }
    Ok(())
}

fn init_tracing(settings: &Settings) -> anyhow::Result<()> {
    // `EnvFilter::try_new` parses the configured directives only; it does not read
    // RUST_LOG (config flows one way). `validate()` has already checked them.
    let filter = EnvFilter::try_new(&settings.log.level)?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match settings.log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A subscriber may already be installed (tests calling `run` twice); keep it.
    if let Err(e) = installed {
        tracing::debug!("tracing subscriber already set: {e}");
    }
    Ok(())
}
