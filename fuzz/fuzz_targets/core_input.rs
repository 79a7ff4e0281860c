//! The core's input handlers under arbitrary client and peer bytes: never a panic.
//!
//! Random bytes rarely get past authentication, so besides raw client and peer
//! datagrams the input can ask for *signed* requests: the target wraps fuzzed
//! attributes with valid USERNAME/REALM/NONCE/MESSAGE-INTEGRITY, which drives every
//! TURN handler with hostile attribute values.
#![no_main]
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use turnpike::proto::auth::long_term_key;
use turnpike::proto::peer_policy::PeerPolicy;
use turnpike::proto::quota::Quotas;
use turnpike::proto::server::{PEER_HEADROOM, PEER_TAILROOM};
use turnpike::proto::stun::attr::{self, PASSWORD_ALGORITHM_MD5};
use turnpike::proto::stun::{method, Class, Message, MessageBuilder, TransactionId};
use turnpike::proto::{ClientId, Event, RelayIp, RelayKey, Server, ServerConfig, SharedPool, Transport};

fn config(t0: Instant) -> ServerConfig {
    ServerConfig {
        realm: "fuzz".into(),
        software: Some("fuzz".into()),
        users: vec![("u".into(), "p".into())],
        secrets: vec![b"s".to_vec()],
        relay_v4: Some(RelayIp { bind: "127.0.0.1".parse().unwrap(), advertise: None, host: None }),
        relay_v6: Some(RelayIp { bind: "::1".parse().unwrap(), advertise: None, host: None }),
        peer_policy: PeerPolicy::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()], vec![]),
        ..ServerConfig::new([7; 32], (t0, 1_800_000_000))
    }
}

struct Harness {
    server: Server,
    relays: Vec<RelayKey>,
    nonce: Vec<u8>,
    tid: u32,
}

impl Harness {
    fn drain(&mut self, now: Instant) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                Event::OpenRelay(key) => {
                    self.server.handle_relay_opened(now, key, Ok(()));
                    self.relays.push(key);
                }
                Event::CloseRelay(key) => self.relays.retain(|k| *k != key),
                Event::DontFragment(_) | Event::Authenticated(_) => {}
            }
        }
        while let Some(t) = self.server.poll_transmit() {
            // Keep the latest nonce the server handed out.
            if let Ok(msg) = Message::parse(&t.payload) {
                if let Some(nonce) = msg.get(attr::NONCE) {
                    self.nonce = nonce.to_vec();
                }
            }
        }
    }

    fn signed(&mut self, method: u16, attrs: &[u8]) -> Vec<u8> {
        self.tid += 1;
        let mut tid = [0u8; 12];
        tid[..4].copy_from_slice(&self.tid.to_be_bytes());
        let mut buf = Vec::new();
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, TransactionId(tid));
        // Fuzzed attributes: [type hi, type lo, len, value...]*
        let mut rest = attrs;
        while rest.len() >= 3 {
            let typ = u16::from_be_bytes([rest[0], rest[1]]);
            let len = usize::from(rest[2]).min(rest.len() - 3);
            b.add(typ, &rest[3..3 + len]);
            rest = &rest[3 + len..];
        }
        b.add(attr::USERNAME, b"u");
        b.add(attr::REALM, b"fuzz");
        b.add(attr::NONCE, &self.nonce);
        b.add_message_integrity(&long_term_key(PASSWORD_ALGORITHM_MD5, "u", "fuzz", "p"));
        buf
    }
}

fuzz_target!(|data: &[u8]| {
    static T0: OnceLock<Instant> = OnceLock::new();
    let t0 = *T0.get_or_init(Instant::now);
    let mut h = Harness { server: Server::new(config(t0), Arc::new(SharedPool::new(50000..=50009, Quotas::new(0, 0))), 1), relays: Vec::new(), nonce: Vec::new(), tid: 0 };
    let client = ClientId {
        transport: if data.first().is_some_and(|b| b & 1 == 1) { Transport::Tcp } else { Transport::Udp },
        remote: "192.0.2.1:40000".parse::<SocketAddr>().unwrap(),
        local: "127.0.0.1:3478".parse::<SocketAddr>().unwrap(),
    };
    let peer: SocketAddr = "198.51.100.1:5000".parse().unwrap();
    let mut now = t0;
    // Obtain a nonce, then a real allocation, so the relay paths are reachable.
    let probe = h.signed(method::ALLOCATE, &[]);
    let _ = h.server.handle_client_input(now, client, &probe);
    h.drain(now);
    let alloc = h.signed(method::ALLOCATE, &[0x00, 0x19, 4, 17, 0, 0, 0]);
    let _ = h.server.handle_client_input(now, client, &alloc);
    h.drain(now);

    let mut buf = vec![0u8; PEER_HEADROOM + 65535 + PEER_TAILROOM];
    for chunk in data.split(|&b| b == 0xA5) {
        let Some((&mode, body)) = chunk.split_first() else { continue };
        match mode % 4 {
            0 => {
                let _ = h.server.handle_client_input(now, client, body);
            }
            1 => {
                if let Some(relay) = h.relays.first().copied() {
                    let len = body.len().min(65535);
                    buf[PEER_HEADROOM..PEER_HEADROOM + len].copy_from_slice(&body[..len]);
                    let _ = h.server.handle_peer_input(now, relay, peer, &mut buf, len);
                }
            }
            2 => {
                let Some((&m, attrs)) = body.split_first() else { continue };
                let request = h.signed(u16::from(m % 10), attrs);
                let _ = h.server.handle_client_input(now, client, &request);
            }
            _ => {
                now += Duration::from_secs(u64::from(body.first().copied().unwrap_or(1)) * 8);
                h.server.handle_timeout(now);
            }
        }
        h.drain(now);
    }
});
