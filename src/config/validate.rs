//! `RawConfig` → `Settings`: every check the file's keys need, each error naming its key.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

use super::error::{ConfigError, KeyIndex, Origin};
use super::raw::{RawAuth, RawConfig, RawFleet, RawListen, RawRelay, RawSignaling};
use super::settings::*;

/// Keys that a command-line flag replaced, mapped to the flag, so that an error about
/// such a key names the flag the operator typed rather than a file line they never wrote.
pub(crate) type FlagMap = BTreeMap<&'static str, &'static str>;

/// RFC 8489 §14.9 (REALM) and §14.14 (SOFTWARE): fewer than 128 characters.
const MAX_TEXT_CHARS: usize = 127;
/// RFC 8489 §14.3: USERNAME is fewer than 509 bytes.
const MAX_USERNAME_BYTES: usize = 508;
/// Upper bound on allocation and nonce lifetimes. Longer values have no use (clients
/// refresh) and this keeps `Instant + lifetime` far from overflow.
const MAX_LIFETIME_SECS: u64 = 86_400;
/// Upper bound on REST credential lifetimes (ten years), for the same overflow reason.
const MAX_CREDENTIAL_SECS: u64 = 10 * 365 * 86_400;
/// Longest cool-down of a throttled source (a day): the throttle keeps seconds in 32 bits,
/// and a longer lock-out only helps someone who wants a NAT's users shut out.
const MAX_COOLDOWN_SECS: u64 = 86_400;

/// Names errors: the file and line of a key, or the flag that replaced it.
pub(crate) struct Ctx<'a> {
    pub origin: &'a Origin,
    pub index: &'a KeyIndex,
    pub flags: &'a FlagMap,
}

impl Ctx<'_> {
    pub(crate) fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let base = key.split('[').next().unwrap_or(key);
        match self.flags.get(base) {
            Some(flag) => ConfigError {
                origin: "command line".into(),
                line: None,
                key: format!("{flag} (sets {key})"),
                reason: reason.into(),
            },
            None => ConfigError {
                origin: self.origin.to_string(),
                line: self.index.line_of(key),
                key: key.into(),
                reason: reason.into(),
            },
        }
    }
}

pub(crate) fn validate(raw: &RawConfig, ctx: &Ctx) -> Result<Settings, ConfigError> {
    let realm = &raw.server.realm;
    if realm.is_empty() {
        return Err(ctx.err("server.realm", "must not be empty"));
    }
    check_attribute_text(ctx, "server.realm", realm)?;
    let software = match raw.server.software.as_str() {
        "" => None,
        s => {
            check_attribute_text(ctx, "server.software", s)?;
            Some(s.to_string())
        }
    };
    let workers = match raw.server.workers {
        // available_parallelism fails only where the OS cannot tell; one worker still works.
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    if raw.server.busy_poll_us > 100_000 {
        return Err(ctx.err(
            "server.busy_poll_us",
            format!("{} is more than 100000 (0.1 s)", raw.server.busy_poll_us),
        ));
    }
    let busy_poll = std::time::Duration::from_micros(raw.server.busy_poll_us);
    if raw.server.coalesce_us > 1_000 {
        return Err(ctx.err(
            "server.coalesce_us",
            format!(
                "{} is more than 1000 (1 ms, the most a packet may be held)",
                raw.server.coalesce_us
            ),
        ));
    }
    if raw.server.coalesce_us > 0 && raw.server.busy_poll_us > 0 {
        return Err(ctx.err(
            "server.coalesce_us",
            "cannot be combined with server.busy_poll_us (one spends CPU to cut latency, \
             the other spends latency to save CPU)"
                .to_string(),
        ));
    }
    let coalesce = std::time::Duration::from_micros(raw.server.coalesce_us);
    let fast_path_interfaces = fast_path_interfaces(ctx, &raw.server.fast_path_interfaces)?;
    if raw.server.drain_timeout_secs == 0 || raw.server.drain_timeout_secs > 86_400 {
        return Err(ctx.err(
            "server.drain_timeout_secs",
            format!(
                "{} is not between 1 and 86400 (one day)",
                raw.server.drain_timeout_secs
            ),
        ));
    }
    let drain_timeout = Duration::from_secs(raw.server.drain_timeout_secs);
    let mut alternate_servers = Vec::with_capacity(raw.server.alternate_servers.len());
    for (i, value) in raw.server.alternate_servers.iter().enumerate() {
        let key = format!("server.alternate_servers[{i}]");
        let addr = socket_addr(ctx, &key, value)?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ctx.err(&key, format!("{addr}: clients need an address and a port")));
        }
        alternate_servers.push(addr);
    }
    let listen = listen(ctx, &raw.listen)?;
    // TLS listeners need a certificate; QUIC listeners use it when there is one and
    // make a self-signed one otherwise (a development default, like the ephemeral
    // secret). Half a certificate is an error either way.
    let (cert, key) = (&raw.tls.certificate, &raw.tls.private_key);
    let tls = match (cert.is_empty(), key.is_empty()) {
        (false, false) => Some(Tls {
            certificate: PathBuf::from(cert),
            private_key: PathBuf::from(key),
        }),
        (true, true) if listen.tls.is_empty() => None,
        (true, _) if !listen.tls.is_empty() => {
            return Err(ctx.err(
                "tls.certificate",
                "required because listen.tls is not empty",
            ))
        }
        (_, true) if !listen.tls.is_empty() => {
            return Err(ctx.err(
                "tls.private_key",
                "required because listen.tls is not empty",
            ))
        }
        (true, _) => return Err(ctx.err("tls.certificate", "required with tls.private_key")),
        (_, true) => return Err(ctx.err("tls.private_key", "required with tls.certificate")),
    };
    let relay = relay(ctx, &raw.relay, workers)?;
    let limits = Limits {
        user_quota: Some(raw.limits.user_quota).filter(|&n| n != 0),
        total_quota: Some(raw.limits.total_quota).filter(|&n| n != 0),
        max_username_len: raw.limits.max_username_len,
        auth_failures_per_minute: raw.limits.auth_failures_per_minute,
        auth_cooldown: Duration::from_secs(raw.limits.auth_cooldown_secs),
        max_bps_per_allocation: raw.limits.max_bps_per_allocation,
        max_bps_per_user: raw.limits.max_bps_per_user,
        max_bps_total: raw.limits.max_bps_total,
        unauthenticated_timeout: Some(Duration::from_secs(raw.limits.unauthenticated_timeout_secs))
            .filter(|d| !d.is_zero()),
        max_connections_per_source: raw.limits.max_connections_per_source,
        max_connections: raw.limits.max_connections,
    };
    if limits.auth_failures_per_minute != 0
        && !(1..=MAX_COOLDOWN_SECS).contains(&raw.limits.auth_cooldown_secs)
    {
        return Err(ctx.err(
            "limits.auth_cooldown_secs",
            format!("must be 1 to {MAX_COOLDOWN_SECS} while limits.auth_failures_per_minute is on"),
        ));
    }
    if limits.max_username_len == 0 || limits.max_username_len > MAX_USERNAME_BYTES {
        return Err(ctx.err(
            "limits.max_username_len",
            format!("must be 1 to {MAX_USERNAME_BYTES} (RFC 8489 §14.3)"),
        ));
    }
    let auth = auth(ctx, &raw.auth, limits.max_username_len)?;
    let peers = Peers {
        allow: cidrs(ctx, "peers.allow", &raw.peers.allow)?,
        deny: cidrs(ctx, "peers.deny", &raw.peers.deny)?,
    };
    let metrics = match raw.metrics.listen.as_str() {
        "" => None,
        s => Some(socket_addr(ctx, "metrics.listen", s)?),
    };
    let format = match raw.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ctx.err(
                "log.format",
                format!("{other:?} is not \"text\" or \"json\""),
            ))
        }
    };
    if raw.log.level.is_empty() {
        return Err(ctx.err("log.level", "must not be empty (e.g. \"info\")"));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        return Err(ctx.err("log.level", format!("{:?}: {e}", raw.log.level)));
    }
    let signaling = signaling(ctx, &raw.signaling)?;
    let fleet = fleet(ctx, &raw.fleet)?;
    Ok(Settings {
        realm: realm.clone(),
        software,
        workers,
        busy_poll,
        coalesce,
        fast_path_interfaces,
        drain_timeout,
        alternate_servers,
        listen,
        tls,
        relay,
        auth,
        limits,
        peers,
        metrics,
        rtp_quality: raw.telemetry.rtp_quality,
        log: Log {
            format,
            level: raw.log.level.clone(),
        },
        signaling,
        fleet,
    })
}

/// Longest `fleet.id` and `fleet.region`: they are Redis key parts and metric labels.
const MAX_FLEET_NAME: usize = 64;

fn fleet(ctx: &Ctx, raw: &RawFleet) -> Result<Option<Fleet>, ConfigError> {
    let redis_url = match raw.redis_url.as_str() {
        "" => return Ok(None),
        url if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p)) =>
        {
            Secret::new(url)
        }
        // The value may hold a password: don't quote it.
        _ => {
            return Err(ctx.err(
                "fleet.redis_url",
                "not a redis://, rediss:// or unix:// URL",
            ))
        }
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= MAX_FLEET_NAME
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b))
    };
    if !name_ok(&raw.region) {
        return Err(ctx.err(
            "fleet.region",
            format!(
                "{:?}: 1 to {MAX_FLEET_NAME} characters of A-Z a-z 0-9 . - _ : [ ]",
                raw.region
            ),
        ));
    }
    let id = match raw.id.as_str() {
        "" => None,
        id if name_ok(id) => Some(id.to_string()),
        id => {
            return Err(ctx.err(
                "fleet.id",
                format!("{id:?}: 1 to {MAX_FLEET_NAME} characters of A-Z a-z 0-9 . - _ : [ ]"),
            ))
        }
    };
    for (i, url) in raw.public_urls.iter().enumerate() {
        if !["turn:", "turns:", "masque://"]
            .iter()
            .any(|p| url.starts_with(p))
        {
            return Err(ctx.err(
                &format!("fleet.public_urls[{i}]"),
                format!("{url:?} is not a turn: or turns: URI, nor masque://host:port"),
            ));
        }
    }
    Ok(Some(Fleet {
        redis_url,
        announce: raw.announce,
        id,
        region: raw.region.clone(),
        public_urls: raw.public_urls.clone(),
    }))
}

/// Largest `signaling.max_frame_bytes` (16 MiB): SDP is a few KiB; more is abuse.
const MAX_FRAME_BYTES: usize = 16 << 20;

fn signaling(ctx: &Ctx, raw: &RawSignaling) -> Result<Option<Signaling>, ConfigError> {
    // Dev login signs tokens for any name with the token key; with a real (shared) key
    // that would let anyone sign in as anyone, so the two exclude each other.
    if raw.dev_login && !raw.token_key.is_empty() {
        return Err(ctx.err(
            "signaling.dev_login",
            "must be false when signaling.token_key is set (dev login would let anyone \
             sign in as any user of your app)",
        ));
    }
    if !raw.dev_login && raw.token_key.is_empty() {
        return Err(ctx.err(
            "signaling.token_key",
            "required when dev_login = false (the key your app backend signs tokens with)",
        ));
    }
    let listen = match raw.listen.as_str() {
        "" => return Ok(None),
        s => socket_addr(ctx, "signaling.listen", s)?,
    };
    // Dev login mints a token for any name anyone asks for: whoever reaches the
    // listener could sign in as any user and collect relay credentials. That is a
    // demo on one machine, never a service: refuse it off loopback.
    if raw.dev_login && !listen.ip().is_loopback() {
        return Err(ctx.err(
            "signaling.dev_login",
            format!(
                "must be false when signaling.listen ({listen}) is not a loopback address: \
                 dev login lets anyone who reaches it sign in as any user; set \
                 dev_login = false and token_key to your app backend's key"
            ),
        ));
    }
    if !(1024..=MAX_FRAME_BYTES).contains(&raw.max_frame_bytes) {
        return Err(ctx.err(
            "signaling.max_frame_bytes",
            format!("must be 1024 to {MAX_FRAME_BYTES}"),
        ));
    }
    if raw.invites_per_minute == 0 {
        return Err(ctx.err("signaling.invites_per_minute", "must be at least 1"));
    }
    let push_webhook = match raw.push_webhook.as_str() {
        "" => None,
        url if url.starts_with("http://") || url.starts_with("https://") => Some(url.to_string()),
        url => {
            return Err(ctx.err(
                "signaling.push_webhook",
                format!("{url:?} is not an http:// or https:// URL"),
            ))
        }
    };
    let redis_url = match raw.redis_url.as_str() {
        "" => None,
        url if ["redis://", "rediss://", "unix://"]
            .iter()
            .any(|p| url.starts_with(p)) =>
        {
            Some(Secret::new(url))
        }
        // The value may hold a password: don't quote it.
        _ => {
            return Err(ctx.err(
                "signaling.redis_url",
                "not a redis://, rediss:// or unix:// URL",
            ))
        }
    };
    let mut relays = Vec::with_capacity(raw.relays.len());
    for (i, relay) in raw.relays.iter().enumerate() {
        let key = format!("signaling.relays[{i}]");
        if relay.region.is_empty() {
            return Err(ctx.err(&key, "region must not be empty"));
        }
        if relay.urls.is_empty() {
            return Err(ctx.err(&key, "urls must not be empty"));
        }
        if let Some(bad) = relay.urls.iter().find(|u| {
            !["turn:", "turns:", "stun:", "masque://"]
                .iter()
                .any(|p| u.starts_with(p))
        }) {
            return Err(ctx.err(
                &key,
                format!(
                    "{bad:?} is not a turn:, turns: or stun: URI (RFC 7065), nor a \
                     masque://host:port TURN-over-QUIC address"
                ),
            ));
        }
        relays.push(SignalingRelay {
            region: relay.region.clone(),
            urls: relay.urls.clone(),
        });
    }
    let secs = |key: &str, v: u64| lifetime(ctx, key, v, MAX_LIFETIME_SECS);
    Ok(Some(Signaling {
        listen,
        token_key: Secret::new(raw.token_key.as_str()),
        dev_login: raw.dev_login,
        invite_lifetime: secs("signaling.invite_lifetime_secs", raw.invite_lifetime_secs)?,
        connect_timeout: secs("signaling.connect_timeout_secs", raw.connect_timeout_secs)?,
        resume_grace: secs("signaling.resume_grace_secs", raw.resume_grace_secs)?,
        credential_ttl: secs("signaling.credential_ttl_secs", raw.credential_ttl_secs)?,
        max_frame_bytes: raw.max_frame_bytes,
        invites_per_minute: raw.invites_per_minute,
        push_webhook,
        redis_url,
        relays,
    }))
}

/// REALM and SOFTWARE go on the wire as UTF-8 text of fewer than 128 characters.
fn check_attribute_text(ctx: &Ctx, key: &str, value: &str) -> Result<(), ConfigError> {
    if value.chars().count() > MAX_TEXT_CHARS {
        return Err(ctx.err(
            key,
            format!("longer than {MAX_TEXT_CHARS} characters (RFC 8489 §14.9, §14.14)"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ctx.err(key, "contains control characters"));
    }
    Ok(())
}

fn socket_addr(ctx: &Ctx, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ctx.err(
            key,
            format!("{value:?} is not an address:port (e.g. \"0.0.0.0:3478\" or \"[::]:3478\")"),
        )
    })
}

fn listen(ctx: &Ctx, raw: &RawListen) -> Result<Listen, ConfigError> {
    let list = |name: &str, values: &[String]| -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out: Vec<SocketAddr> = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let key = format!("listen.{name}[{i}]");
            let addr = socket_addr(ctx, &key, value)?;
            if addr.port() == 0 {
                return Err(ctx.err(&key, "port 0: clients need a fixed port"));
            }
            if out.contains(&addr) {
                return Err(ctx.err(&key, format!("{addr} is listed twice")));
            }
            out.push(addr);
        }
        Ok(out)
    };
    let listen = Listen {
        udp: list("udp", &raw.udp)?,
        tcp: list("tcp", &raw.tcp)?,
        tls: list("tls", &raw.tls)?,
        quic: list("quic", &raw.quic)?,
    };
    // QUIC and UDP listeners are both UDP sockets: one address cannot serve both.
    if let Some(i) = listen.quic.iter().position(|a| listen.udp.contains(a)) {
        let key = format!("listen.quic[{i}]");
        return Err(ctx.err(
            &key,
            "also in listen.udp; UDP and QUIC need different ports",
        ));
    }
    // TCP and TLS are both TCP sockets: one address cannot serve both.
    if let Some(i) = listen.tls.iter().position(|a| listen.tcp.contains(a)) {
        let key = format!("listen.tls[{i}]");
        return Err(ctx.err(&key, "also in listen.tcp; TCP and TLS need different ports"));
    }
    if listen.udp.is_empty()
        && listen.tcp.is_empty()
        && listen.tls.is_empty()
        && listen.quic.is_empty()
    {
        return Err(ctx.err(
            "listen.udp",
            "no TURN listener at all (listen.udp, listen.tcp, listen.tls and listen.quic \
             are all empty)",
        ));
    }
    Ok(listen)
}

fn relay(ctx: &Ctx, raw: &RawRelay, workers: usize) -> Result<Relay, ConfigError> {
    let ipv4 = relay_family(ctx, "ipv4", &raw.bind_ipv4, &raw.external_ipv4)?;
    let ipv6 = relay_family(ctx, "ipv6", &raw.bind_ipv6, &raw.external_ipv6)?;
    if ipv4.is_none() && ipv6.is_none() {
        return Err(ctx.err(
            "relay.bind_ipv4",
            "relay.bind_ipv4 and relay.bind_ipv6 are both \"\": nowhere to relay",
        ));
    }
    if raw.port_min == 0 {
        return Err(ctx.err("relay.port_min", "must be at least 1"));
    }
    if raw.port_min > raw.port_max {
        return Err(ctx.err(
            "relay.port_min",
            format!(
                "{} is greater than relay.port_max ({})",
                raw.port_min, raw.port_max
            ),
        ));
    }
    // At least one port per worker. The relay port pool is shared by all workers, so
    // the relay itself would run with fewer; a range smaller than the worker count is
    // refused as a sign of a misconfigured range rather than a constraint of the pool.
    let ports = usize::from(raw.port_max - raw.port_min) + 1;
    if ports < workers {
        return Err(ctx.err(
            "server.workers",
            format!(
                "{workers} workers need at least {workers} relay ports; \
                 relay.port_min..relay.port_max has {ports}"
            ),
        ));
    }
    let default_lifetime = lifetime(
        ctx,
        "relay.default_lifetime_secs",
        raw.default_lifetime_secs,
        MAX_LIFETIME_SECS,
    )?;
    let max_lifetime = lifetime(
        ctx,
        "relay.max_lifetime_secs",
        raw.max_lifetime_secs,
        MAX_LIFETIME_SECS,
    )?;
    if default_lifetime > max_lifetime {
        return Err(ctx.err(
            "relay.default_lifetime_secs",
            format!(
                "{} is greater than relay.max_lifetime_secs ({})",
                raw.default_lifetime_secs, raw.max_lifetime_secs
            ),
        ));
    }
    Ok(Relay {
        ipv4,
        ipv6,
        ports: raw.port_min..=raw.port_max,
        default_lifetime,
        max_lifetime,
        rfc5766_channel_numbers: raw.rfc5766_channel_numbers,
    })
}

/// One relay address family (`family` is "ipv4" or "ipv6"): `relay.bind_<family>`, where
/// "" turns the family off, and `relay.external_<family>`, where "" means "not behind NAT".
fn relay_family(
    ctx: &Ctx,
    family: &str,
    bind: &str,
    external: &str,
) -> Result<Option<RelayAddr>, ConfigError> {
    let bind_key = format!("relay.bind_{family}");
    let ext_key = format!("relay.external_{family}");
    let want_v4 = family == "ipv4";
    let parse = |key: &str, value: &str| {
        let ip = value.parse::<IpAddr>().ok();
        ip.filter(|ip| ip.is_ipv4() == want_v4).ok_or_else(|| {
            let name = if want_v4 { "IPv4" } else { "IPv6" };
            ctx.err(key, format!("{value:?} is not an {name} address"))
        })
    };
    let external = match external {
        "" => None,
        value => {
            let ip = parse(&ext_key, value)?;
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(ctx.err(&ext_key, format!("{ip} cannot be advertised to clients")));
            }
            Some(ip)
        }
    };
    if bind.is_empty() {
        if external.is_some() {
            return Err(ctx.err(
                &ext_key,
                format!("set, but {bind_key} is \"\" (relaying on this family is off)"),
            ));
        }
        return Ok(None);
    }
    let bind = parse(&bind_key, bind)?;
    if bind.is_multicast() {
        return Err(ctx.err(&bind_key, format!("{bind} is a multicast address")));
    }
    Ok(Some(RelayAddr { bind, external }))
}

fn lifetime(ctx: &Ctx, key: &str, secs: u64, max: u64) -> Result<Duration, ConfigError> {
    if secs == 0 || secs > max {
        return Err(ctx.err(
            key,
            format!("{secs} is out of range: must be 1 to {max} seconds"),
        ));
    }
    Ok(Duration::from_secs(secs))
}

fn auth(ctx: &Ctx, raw: &RawAuth, max_username_len: usize) -> Result<Auth, ConfigError> {
    // Error messages name entries by index and user name, never by their password.
    let mut users: Vec<User> = Vec::with_capacity(raw.users.len());
    for (i, entry) in raw.users.iter().enumerate() {
        let key = format!("auth.users[{i}]");
        let Some((name, password)) = entry.split_once(':') else {
            return Err(ctx.err(&key, "expected \"name:password\" (no ':' found)"));
        };
        if name.is_empty() {
            return Err(ctx.err(&key, "the user name before ':' is empty"));
        }
        if name.len() > max_username_len {
            return Err(ctx.err(
                &key,
                format!(
                    "user name is longer than limits.max_username_len ({max_username_len} bytes)"
                ),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(ctx.err(&key, "user name contains control characters"));
        }
        if password.is_empty() {
            return Err(ctx.err(&key, format!("user {name:?} has an empty password")));
        }
        if users.iter().any(|u| u.name == name) {
            return Err(ctx.err(&key, format!("user {name:?} is listed twice")));
        }
        users.push(User {
            name: name.to_string(),
            password: Secret::new(password),
        });
    }
    let mut secrets: Vec<Secret> = Vec::with_capacity(raw.secrets.len());
    let mut seen = HashSet::new();
    for (i, secret) in raw.secrets.iter().enumerate() {
        let key = format!("auth.secrets[{i}]");
        if secret.is_empty() {
            return Err(ctx.err(&key, "empty secret"));
        }
        if !seen.insert(secret.as_str()) {
            return Err(ctx.err(&key, "same secret as an earlier entry"));
        }
        secrets.push(Secret::new(secret.as_str()));
    }
    Ok(Auth {
        users,
        secrets,
        max_credential_lifetime: lifetime(
            ctx,
            "auth.max_credential_lifetime_secs",
            raw.max_credential_lifetime_secs,
            MAX_CREDENTIAL_SECS,
        )?,
        nonce_lifetime: lifetime(
            ctx,
            "auth.nonce_lifetime_secs",
            raw.nonce_lifetime_secs,
            MAX_LIFETIME_SECS,
        )?,
    })
}

/// CIDR list; a bare address means just that host (`/32`, `/128`).
fn cidrs(ctx: &Ctx, key: &str, values: &[String]) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::with_capacity(values.len());
    for (i, value) in values.iter().enumerate() {
        let net = match (value.parse::<IpNet>(), value.parse::<IpAddr>()) {
            (Ok(net), _) => net.trunc(),
            (Err(_), Ok(ip)) => IpNet::from(ip),
            (Err(_), Err(_)) => {
                return Err(ctx.err(
                    &format!("{key}[{i}]"),
                    format!("{value:?} is not a CIDR range (e.g. \"10.0.0.0/8\") or address"),
                ))
            }
        };
        out.push(net);
    }
    Ok(out)
}

/// Interface names as the kernel takes them (IFNAMSIZ: at most 15 bytes, no '/', no
/// whitespace), each once. Whether they exist is checked when the program attaches.
fn fast_path_interfaces(ctx: &Ctx<'_>, names: &[String]) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "server.fast_path_interfaces";
    let mut seen: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= 15
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            return Err(ctx.err(KEY, format!("{name:?} is not a network interface name")));
        }
        if seen.contains(name) {
            return Err(ctx.err(KEY, format!("{name:?} is listed twice")));
        }
        seen.push(name.clone());
    }
    Ok(seen)
}
