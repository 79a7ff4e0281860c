//! The `turnpike` binary: argument parsing and nothing else. In the `turnpike` crate
//! `anyhow` is used only here and in `serve`, which report start-up failures to the
//! operator; the other modules return typed errors.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use turnpike::config::{self, ConfigFile, Overrides};

#[derive(Parser)]
#[command(
    name = "turnpike",
    version,
    about = "A STUN/TURN media relay for end-to-end encrypted calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    ///
    /// Without --config it runs on the embedded default configuration
    /// (config/turnpike.toml). Flags and TURNPIKE_* variables override the file's keys; a
    /// repeatable flag given at all replaces the file's whole list. Variables of list flags,
    /// and the values of --listen, --secret, --allow-peer, --deny-peer and --external-ip,
    /// are split at commas.
    Serve(ServeArgs),
    /// Ask a running `turnpike serve` to reload its configuration file (sends SIGHUP to
    /// the process named in its --pid-file). The relay logs the outcome; a bad file is
    /// refused and the running configuration stays.
    Reload {
        /// The file `turnpike serve --pid-file` wrote.
        #[arg(long, value_name = "FILE")]
        pid_file: PathBuf,
    },
    /// Load and validate a configuration file, print a summary, and exit (0 = ok, 1 = bad).
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Mint TURN REST API credentials (username "<expiry>:<user>", password
    /// base64(HMAC-SHA1(secret, username))), as coturn's turnadmin and eturnalctl do.
    Credentials(CredentialsArgs),
    /// Give TURN clients a local UDP port carried to a Turnpike relay over QUIC
    /// (CONNECT-UDP over HTTP/3): point any TURN client at --local as its TURN server.
    /// Each local client gets its own tunnel, which follows the machine across network
    /// changes (QUIC migration) without the client noticing.
    Tunnel(TunnelArgs),
}

#[derive(Args)]
struct TunnelArgs {
    /// The relay's QUIC listener (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    relay: String,
    /// Local UDP address for TURN clients.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:3478")]
    local: std::net::SocketAddr,
    /// TLS server name (default: the relay's host).
    #[arg(long, value_name = "NAME")]
    server_name: Option<String>,
    /// Verify the relay's certificate against this PEM CA file.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pin", "insecure"])]
    ca: Option<PathBuf>,
    /// Accept only the certificate with this SHA-256 (as `turnpike serve` logs it for its
    /// self-signed certificate).
    #[arg(long, value_name = "SHA256", conflicts_with = "insecure")]
    pin: Option<String>,
    /// Accept any certificate (development only).
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (default: the embedded config/turnpike.toml).
    #[arg(long, env = "TURNPIKE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// TURN listener. A bare ADDR:PORT listens on UDP and TCP; udp://, tcp://, tls:// or
    /// quic:// picks one transport. Replaces listen.udp and listen.tcp (listen.tls and
    /// listen.quic only when a tls:// or quic:// address is given).
    #[arg(
        long,
        env = "TURNPIKE_LISTEN",
        value_name = "ADDR:PORT",
        value_delimiter = ','
    )]
    listen: Option<Vec<String>>,
    /// PEM certificate chain for TLS and QUIC listeners (tls.certificate).
    #[arg(long, env = "TURNPIKE_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key for TLS and QUIC listeners (tls.private_key).
    #[arg(long, env = "TURNPIKE_TLS_KEY", value_name = "FILE")]
    tls_key: Option<String>,
    /// Realm (server.realm).
    #[arg(long, env = "TURNPIKE_REALM", value_name = "REALM")]
    realm: Option<String>,
    /// Static user (auth.users). The variable holds one user.
    #[arg(
        long = "user",
        env = "TURNPIKE_USER",
        value_name = "NAME:PASSWORD",
        hide_env_values = true
    )]
    users: Option<Vec<String>>,
    /// TURN REST shared secret (auth.secrets).
    #[arg(
        long = "secret",
        env = "TURNPIKE_SECRET",
        value_name = "SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    secrets: Option<Vec<String>>,
    /// Peer range to allow despite the built-in refusal (peers.allow).
    #[arg(
        long = "allow-peer",
        env = "TURNPIKE_ALLOW_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    allow_peers: Option<Vec<String>>,
    /// Peer range to refuse always (peers.deny).
    #[arg(
        long = "deny-peer",
        env = "TURNPIKE_DENY_PEER",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    deny_peers: Option<Vec<String>>,
    /// Allocations per user, 0 = unlimited (limits.user_quota).
    #[arg(long, env = "TURNPIKE_USER_QUOTA", value_name = "N")]
    user_quota: Option<u32>,
    /// Also accept RFC 5766 channel numbers 0x5000-0x7FFF, as coturn's turnutils_uclient
    /// uses (relay.rfc5766_channel_numbers).
    #[arg(long, env = "TURNPIKE_RFC5766_CHANNELS")]
    rfc5766_channels: bool,
    /// Worker threads, 0 = one per core (server.workers).
    #[arg(long, env = "TURNPIKE_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// Address advertised to clients, at most one IPv4 (relay.external_ipv4) and one IPv6
    /// (relay.external_ipv6).
    #[arg(
        long = "external-ip",
        env = "TURNPIKE_EXTERNAL_IP",
        value_name = "IP",
        value_delimiter = ','
    )]
    external_ips: Option<Vec<String>>,
    /// Prometheus endpoint address, "" = off (metrics.listen).
    #[arg(long, env = "TURNPIKE_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Write the process id to FILE once listening (removed at exit), for
    /// `turnpike reload --pid-file FILE`.
    #[arg(long, env = "TURNPIKE_PID_FILE", value_name = "FILE")]
    pid_file: Option<PathBuf>,
}

#[derive(Args)]
struct CredentialsArgs {
    /// Shared secret; with several (comma-separated in TURNPIKE_SECRET) the first mints.
    #[arg(
        long,
        env = "TURNPIKE_SECRET",
        value_delimiter = ',',
        hide_env_values = true,
        required = true,
        value_parser = non_empty
    )]
    secret: Vec<String>,
    /// User the credential is for (no ':', which separates the expiry).
    #[arg(long, value_parser = rest_user)]
    user: String,
    /// Seconds until the credential expires.
    #[arg(long, default_value_t = 86_400, value_parser = clap::value_parser!(u64).range(1..))]
    ttl: u64,
    /// Print {"username", "password", "ttl"} as JSON.
    #[arg(long)]
    json: bool,
}

fn non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(value.to_string())
}

fn rest_user(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("must not be empty".into());
    }
    if value.contains(':') {
        // The REST username is "<expiry>:<user>"; a ':' in the user would be ambiguous.
        return Err("must not contain ':'".into());
    }
    Ok(value.to_string())
}

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Reload { pid_file } => reload(&pid_file),
        Command::CheckConfig { file } => check_config(file),
        Command::Credentials(args) => credentials(args),
        Command::Tunnel(args) => tunnel(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn tunnel(args: TunnelArgs) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use turnpike::quic::client::{parse_fingerprint, Verify};
    use turnpike::quic::tunnel::{run, TunnelOptions};

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let relay = args
        .relay
        .to_socket_addrs()
        .with_context(|| format!("--relay {}", args.relay))?
        .next()
        .with_context(|| format!("--relay {}: no address", args.relay))?;
    let host = args
        .relay
        .rsplit_once(':')
        .map_or(args.relay.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let verify = if args.insecure {
        Verify::Insecure
    } else if let Some(pin) = &args.pin {
        Verify::Pin(parse_fingerprint(pin).context("--pin: not a SHA-256 fingerprint")?)
    } else if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).with_context(|| format!("--ca {}", ca.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots
                .add(cert.with_context(|| format!("--ca {}", ca.display()))?)
                .with_context(|| format!("--ca {}", ca.display()))?;
        }
        Verify::Roots(Arc::new(roots))
    } else {
        anyhow::bail!(
            "say how to check the relay's certificate: --ca FILE, --pin SHA256 or --insecure"
        )
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    let _ = tokio::signal::ctrl_c().await;
                });
            }
            stop.store(true, Ordering::Release);
        });
    }
    let options = TunnelOptions {
        relay,
        server_name: args.server_name.unwrap_or_else(|| host.to_string()),
        verify,
        local: args.local,
        rebind: Arc::new(AtomicBool::new(false)),
        moved: Arc::default(),
    };
    run(
        options,
        stop,
        |local| tracing::info!(%local, %relay, "tunnel ready: use {local} as the TURN server"),
    )
    .context("tunnel")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        realm: args.realm,
        users: args.users,
        secrets: args.secrets,
        allow_peers: args.allow_peers,
        deny_peers: args.deny_peers,
        user_quota: args.user_quota,
        workers: args.workers,
        external_ips: args.external_ips,
        metrics: args.metrics,
        rfc5766_channels: args.rfc5766_channels.then_some(true),
    };
    let settings = config::load(args.config.as_deref(), &overrides)?;
    let options = turnpike::serve::ServeOptions {
        source: turnpike::reload::ConfigSource {
            path: args.config,
            overrides,
        },
        pid_file: args.pid_file,
    };
    turnpike::serve::run_with(settings, options)
}

fn reload(pid_file: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("--pid-file {}", pid_file.display()))?;
    let pid: libc::pid_t = text
        .trim()
        .parse()
        .ok()
        .filter(|&pid| pid > 0)
        .with_context(|| {
            format!(
                "--pid-file {}: {:?} is not a process id",
                pid_file.display(),
                text.trim()
            )
        })?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!(
            "cannot signal process {pid} (from {}): {e}",
            pid_file.display()
        );
    }
    println!("asked process {pid} to reload; its log says how it went");
    Ok(())
}

fn check_config(file: PathBuf) -> anyhow::Result<()> {
    let settings = ConfigFile::read(&file)?.validate()?;
    println!("{}: ok", file.display());
    println!("{}", settings.summary());
    Ok(())
}

fn credentials(args: CredentialsArgs) -> anyhow::Result<()> {
    // `required = true` and the value parser guarantee one non-empty secret.
    let secret = args.secret.first().context("no secret given")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("system clock is before 1970")?
        .as_secs();
    let expiry = now.checked_add(args.ttl).context("--ttl is too large")?;
    let (username, password) =
        turnpike::proto::auth::mint_rest_credential(secret.as_bytes(), &args.user, expiry);
    if args.json {
        println!(
            "{{\"username\":{},\"password\":{},\"ttl\":{}}}",
            json_string(&username),
            json_string(&password),
            args.ttl
        );
    } else {
        println!("username: {username}");
        println!("password: {password}");
    }
    Ok(())
}

/// A JSON string literal (RFC 8259 §7): the user name is operator input and may hold
/// quotes, backslashes or control characters.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_string_escapes_what_rfc_8259_requires() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
