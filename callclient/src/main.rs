//! `turnpike-call`: place or answer one WebRTC call through Turnpike and print what
//! happened as one JSON line on stdout (logs go to stderr).
//!
//! ```text
//! turnpike-call --signal ws://127.0.0.1:8080 --user bob --answer --seconds 10 &
//! turnpike-call --signal ws://127.0.0.1:8080 --user alice --call bob --seconds 10
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use turnpike::quic::client::{parse_fingerprint, Verify};
use turnpike_callclient::{CallOptions, Payload, RelayTransport, Role};

#[derive(Parser)]
#[command(
    name = "turnpike-call",
    version,
    about = "A WebRTC (webrtc-rs) call through Turnpike: signaling, relay-only ICE, DTLS-SRTP, PCMU tone"
)]
struct Cli {
    /// Signaling service, ws://host:port (dev login and the WebSocket live there).
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    signal: String,
    /// Your user name.
    #[arg(long)]
    user: String,
    /// Your device name.
    #[arg(long, default_value = "turnpike-call")]
    device: String,
    /// Bearer token; without it the client uses dev login (POST /v1/dev/login).
    #[arg(long)]
    token: Option<String>,
    /// Call this user (waits until they are online).
    #[arg(long, conflicts_with = "answer", required_unless_present = "answer")]
    call: Option<String>,
    /// Wait for a call and answer it.
    #[arg(long)]
    answer: bool,
    /// Seconds of media once connected.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Frequency of the tone sent (Hz).
    #[arg(long, default_value_t = 440.0)]
    tone_hz: f64,
    /// Send this ASCII text, repeated, as the RTP payload instead of the tone (and count
    /// received packets containing it): for checking that the relay sees only ciphertext.
    #[arg(long)]
    marker: Option<String>,
    /// Bound on each step before media (sign-in, callee online, invite, answer, ICE).
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// How to reach the relay: "udp" (its turn: URLs) or "quic" (TURN over QUIC to its
    /// quic_urls, through a local tunnel).
    #[arg(long, default_value = "udp", value_parser = ["udp", "quic"])]
    relay_transport: String,
    /// With --relay-transport quic: accept only the relay certificate with this SHA-256
    /// (`turnpike serve` logs it for its self-signed one).
    #[arg(long, value_name = "SHA256")]
    quic_pin: Option<String>,
    /// With --relay-transport quic: accept any relay certificate (development only).
    #[arg(long)]
    quic_insecure: bool,
    /// Log filter for stderr, e.g. "info" or "turnpike_callclient=debug,webrtc=info".
    /// The default hides webrtc-rs's warning for each silent packet it drops (by design)
    /// before DTLS-SRTP is up.
    #[arg(long, default_value = "warn,rtc::peer_connection::handler=error")]
    log: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("turnpike-call: bad --log filter: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let (Ok(media_time), Ok(setup_timeout)) = (
        Duration::try_from_secs_f64(cli.seconds),
        Duration::try_from_secs_f64(cli.timeout),
    ) else {
        eprintln!("turnpike-call: --seconds and --timeout must be non-negative numbers");
        return ExitCode::from(2);
    };
    let role = match cli.call {
        Some(to) => Role::Call { to },
        None => Role::Answer,
    };
    let marker = cli.marker.map(String::into_bytes);
    let relay_transport = match cli.relay_transport.as_str() {
        "quic" => {
            let verify = if cli.quic_insecure {
                Verify::Insecure
            } else if let Some(pin) = cli.quic_pin.as_deref().and_then(parse_fingerprint) {
                Verify::Pin(pin)
            } else {
                eprintln!("turnpike-call: --relay-transport quic needs --quic-pin SHA256 or --quic-insecure");
                return ExitCode::from(2);
            };
            RelayTransport::Quic(verify)
        }
        _ => RelayTransport::Udp,
    };
    let options = CallOptions {
        signal: cli.signal,
        user: cli.user,
        device: cli.device,
        token: cli.token,
        role,
        media_time,
        payload: match &marker {
            Some(marker) => Payload::Marker(marker.clone()),
            None => Payload::Tone(cli.tone_hz),
        },
        expect_marker: marker,
        setup_timeout,
        relay_transport,
        rebind_after: None,
    };
    match turnpike_callclient::run(options).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("turnpike-call: cannot encode the report: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("turnpike-call: {e}");
            ExitCode::FAILURE
        }
    }
}
