//! CONNECT-UDP requests (RFC 9298) over HTTP/3 Extended CONNECT (RFC 9220): what a
//! request asks for, or the status that refuses it.
//!
//! The relay is not a UDP proxy: a tunnel may only reach the relay's own TURN
//! listener, which the shell decides from the [`Target`] parsed here (403 with a
//! Proxy-Status header, RFC 9209, for anything else).

use std::net::IpAddr;

use super::qpack::Field;

/// RFC 9298 §3: the default URI template's path, before `{target_host}`.
pub const PATH_PREFIX: &str = "/.well-known/masque/udp/";

/// Where a CONNECT-UDP request asks to send its datagrams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The target host: an IP address (IPv6 with its colons percent-encoded in the
    /// path, RFC 9298 §2) or a DNS name, lower-cased.
    pub host: Host,
    /// The target UDP port (1–65535).
    pub port: u16,
}

/// The `{target_host}` of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An IPv4 or IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (lower-cased; never resolved by the relay).
    Name(String),
}

/// A refused request: the status to answer with and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status code.
    pub status: u16,
    /// Why, for the log.
    pub reason: &'static str,
}

const fn refuse(status: u16, reason: &'static str) -> Refusal {
    Refusal { status, reason }
}

/// Checks a request's header fields (RFC 9114 §4.3.1, RFC 9220 §3, RFC 9298 §3.4) and
/// returns its target: 400 for a malformed request, 405 for a method other than
/// CONNECT, 501 for an Extended CONNECT protocol other than `connect-udp` (and for
/// classic CONNECT, which the relay does not proxy), 404 for a path that is not the
/// URI template.
pub fn parse_request(fields: &[Field]) -> Result<Target, Refusal> {
    let mut method = None;
    let mut protocol = None;
    let mut scheme = None;
    let mut authority = None;
    let mut path = None;
    let mut regular_seen = false;
    for field in fields {
        if field.name.iter().any(u8::is_ascii_uppercase) {
            return Err(refuse(400, "upper-case field name"));
        }
        let slot = match field.name.as_slice() {
            b":method" => &mut method,
            b":protocol" => &mut protocol,
            b":scheme" => &mut scheme,
            b":authority" => &mut authority,
            b":path" => &mut path,
            name if name.starts_with(b":") => return Err(refuse(400, "unknown pseudo-header")),
            _ => {
                regular_seen = true;
                continue;
            }
        };
        // RFC 9114 §4.3: pseudo-headers come first, each at most once.
        if regular_seen {
            return Err(refuse(400, "pseudo-header after a regular field"));
        }
        if slot.replace(field.value.as_slice()).is_some() {
            return Err(refuse(400, "repeated pseudo-header"));
        }
    }
    match method {
        None => return Err(refuse(400, "no :method")),
        Some(b"CONNECT") => {}
        Some(_) => return Err(refuse(405, "only CONNECT-UDP is served here")),
    }
    match protocol {
        Some(b"connect-udp") => {}
        Some(_) => return Err(refuse(501, "unsupported :protocol")),
        None => return Err(refuse(501, "classic CONNECT is not proxied")),
    }
    if scheme != Some(b"https") {
        return Err(refuse(400, ":scheme must be https"));
    }
    if authority.is_none_or(<[u8]>::is_empty) {
        return Err(refuse(400, "no :authority"));
    }
    let path = path.ok_or(refuse(400, "no :path"))?;
    let path = std::str::from_utf8(path).map_err(|_| refuse(400, "path is not UTF-8"))?;
    parse_path(path).ok_or(refuse(404, "not the CONNECT-UDP URI template"))
}

/// `/.well-known/masque/udp/{target_host}/{target_port}/` → the target.
pub fn parse_path(path: &str) -> Option<Target> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let mut parts = rest.splitn(3, '/');
    let host = percent_decode(parts.next()?)?;
    let port_text = parts.next()?;
    if parts.next() != Some("") {
        return None;
    }
    if port_text.is_empty() || !port_text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port_text.parse().ok().filter(|&p| p != 0)?;
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) if is_dns_name(&host) => Host::Name(host.to_ascii_lowercase()),
        Err(_) => return None,
    };
    Some(Target { host, port })
}

/// Decodes `%XX` escapes; `None` for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Letters, digits, hyphens and dots, 1–253 bytes, labels of 1–63 (RFC 1035 §2.3.4).
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// RFC 9209 Proxy-Status value for a target the relay refuses to reach.
pub const PROXY_STATUS_PROHIBITED: &str = "turnpike; error=destination_ip_prohibited";

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<Field> {
        pairs
            .iter()
            .map(|(n, v)| Field {
                name: n.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            })
            .collect()
    }

    fn request(path: &str) -> Vec<Field> {
        fields(&[
            (":method", "CONNECT"),
            (":protocol", "connect-udp"),
            (":scheme", "https"),
            (":authority", "relay.example:443"),
            (":path", path),
            ("capsule-protocol", "?1"),
        ])
    }

    #[test]
    fn the_default_template_with_addresses_and_names() {
        let ok = |path: &str| parse_request(&request(path)).unwrap();
        assert_eq!(
            ok("/.well-known/masque/udp/192.0.2.6/3478/"),
            Target {
                host: Host::Ip("192.0.2.6".parse().unwrap()),
                port: 3478
            }
        );
        assert_eq!(
            ok("/.well-known/masque/udp/2001%3Adb8%3A%3A42/3478/").host,
            Host::Ip("2001:db8::42".parse().unwrap())
        );
        assert_eq!(
            ok("/.well-known/masque/udp/Relay.Example/443/").host,
            Host::Name("relay.example".into())
        );
    }

    #[test]
    fn other_paths_are_404() {
        for path in [
            "/",
            "/.well-known/masque/udp/192.0.2.6/3478",
            "/.well-known/masque/udp/192.0.2.6/0/",
            "/.well-known/masque/udp/192.0.2.6/65536/",
            "/.well-known/masque/udp/192.0.2.6/+80/",
            "/.well-known/masque/udp/192.0.2.6/3478/extra",
            "/.well-known/masque/udp//3478/",
            "/.well-known/masque/udp/bad%zz/3478/",
            "/.well-known/masque/udp/a%+1/3478/",
            "/.well-known/masque/udp/a_b/3478/",
            "/.well-known/masque/udp/192.0.2.6/3478/?q=1",
        ] {
            assert_eq!(
                parse_request(&request(path)).map_err(|r| r.status),
                Err(404),
                "{path}"
            );
        }
    }

    #[test]
    fn wrong_methods_protocols_and_malformed_requests() {
        let status = |pairs: &[(&str, &str)]| parse_request(&fields(pairs)).map_err(|r| r.status);
        let path = (":path", "/.well-known/masque/udp/192.0.2.6/3478/");
        assert_eq!(
            status(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "a"),
                (":path", "/")
            ]),
            Err(405)
        );
        assert_eq!(
            status(&[
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", "a"),
                path
            ]),
            Err(405)
        );
        let connect = |protocol: Option<&str>| {
            let mut pairs = vec![
                (":method", "CONNECT"),
                (":scheme", "https"),
                (":authority", "a"),
                path,
            ];
            if let Some(p) = protocol {
                pairs.push((":protocol", p));
            }
            status(&pairs)
        };
        assert_eq!(connect(Some("websocket")), Err(501));
        assert_eq!(connect(None), Err(501));
        assert!(connect(Some("connect-udp")).is_ok());
        // Malformed: no method, repeated pseudo-header, pseudo after regular, upper case.
        assert_eq!(status(&[(":path", "/")]), Err(400));
        let mut repeated = request("/.well-known/masque/udp/192.0.2.6/3478/");
        repeated.push(Field {
            name: b":path".to_vec(),
            value: b"/".to_vec(),
        });
        assert_eq!(parse_request(&repeated).map_err(|r| r.status), Err(400));
        let mut upper = request("/.well-known/masque/udp/192.0.2.6/3478/");
        upper[5].name = b"Capsule-Protocol".to_vec();
        assert_eq!(parse_request(&upper).map_err(|r| r.status), Err(400));
        assert_eq!(
            status(&[
                (":method", "CONNECT"),
                (":protocol", "connect-udp"),
                (":scheme", "http"),
                (":authority", "a"),
                path
            ]),
            Err(400)
        );
    }
}
