//! The load generator's TURN client: sets up many allocations at once with a bounded
//! number of transactions in flight, using Turnpike's own STUN codec.
//!
//! Per allocation (one client socket = one 5-tuple, RFC 8656 §3.2): Allocate without
//! credentials → 401 with REALM and NONCE → Allocate with MESSAGE-INTEGRITY (RFC 8489
//! §9.2.4) → CreatePermission for the peers' IP → one ChannelBind per peer, channel
//! numbers from 0x4000 (RFC 8656 §12). A 438 Stale Nonce is answered by retrying with
//! the new nonce (RFC 8489 §9.2.5); a silent server by retransmitting the same request.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rand::RngCore;
use turnpike::proto::auth::long_term_key;
use turnpike::proto::stun::{attr, method, Class, Message, MessageBuilder, TransactionId};

use crate::sys::{Epoll, PortAllocator};

/// Long-term credentials shared by every server under test.
pub struct Creds {
    pub user: String,
    pub password: String,
}

/// A ready allocation: its client socket and the relayed address the server chose.
pub struct Allocation {
    pub sock: UdpSocket,
    pub relayed: SocketAddrV4,
}

/// What one setup run achieved.
pub struct SetupOutcome {
    pub allocations: Vec<Allocation>,
    pub elapsed: Duration,
    pub failures: usize,
    pub retransmits: usize,
    /// The first few failure reasons, for the report.
    pub errors: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Stage {
    Allocate,
    Permission,
    Bind(usize),
}

/// One allocation's way through Allocate, CreatePermission and ChannelBind, whatever
/// carries its messages (a UDP socket here; TLS and QUIC links in `links.rs`).
pub struct Handshake {
    stage: Stage,
    nonce: Option<Vec<u8>>,
    realm: String,
    key: Vec<u8>,
    /// True once this stage was sent with the current nonce: a second 401 then means
    /// the credentials are wrong, not that we lacked a nonce.
    authed_with_nonce: bool,
    tid: [u8; 12],
    /// The current stage's request, as last sent.
    pub msg: Vec<u8>,
    /// The relayed address, once the Allocate succeeded.
    pub relayed: Option<SocketAddrV4>,
}

impl Handshake {
    pub fn new() -> Handshake {
        Handshake {
            stage: Stage::Allocate,
            nonce: None,
            realm: String::new(),
            key: Vec::new(),
            authed_with_nonce: false,
            tid: [0; 12],
            msg: Vec::with_capacity(256),
            relayed: None,
        }
    }
}

struct Slot {
    sock: UdpSocket,
    hs: Handshake,
    sent_at: Instant,
    tries: u32,
}

/// A request unanswered this long is sent again (same transaction id)...
const RETRANSMIT_AFTER: Duration = Duration::from_millis(250);
/// ...at most this many times in all.
const MAX_TRIES: u32 = 6;

/// Sets up `n` allocations on `server`, `window` of them in flight at once; each also
/// gets a permission and one channel per entry of `peers` (none when `peers` is
/// empty). Stops at `deadline`, counting what is unfinished as failed.
pub fn setup(
    server: SocketAddrV4,
    creds: &Creds,
    ports: &mut PortAllocator,
    n: usize,
    window: usize,
    peers: &[SocketAddrV4],
    deadline: Duration,
) -> io::Result<SetupOutcome> {
    let mut epoll = Epoll::new()?;
    let mut slots = Vec::with_capacity(n);
    // Sockets are made before the clock starts: the rate measures the server.
    for i in 0..n {
        let sock = ports.bind()?;
        epoll.add(sock.as_raw_fd(), i as u64)?;
        slots.push(Slot {
            sock,
            hs: Handshake::new(),
            sent_at: Instant::now(),
            tries: 0,
        });
    }
    let window = window.max(1);
    let start = Instant::now();
    let mut active: Vec<usize> = Vec::with_capacity(window);
    let mut next = 0;
    let mut done: Vec<usize> = Vec::with_capacity(n);
    let (mut failures, mut retransmits) = (0, 0);
    let mut errors = Vec::new();
    let mut ready = Vec::new();
    let mut buf = [0u8; 2048];
    let mut rng = rand::thread_rng();
    let mut last_sweep = Instant::now();
    while next < n || !active.is_empty() {
        while active.len() < window && next < n {
            let slot = &mut slots[next];
            send_stage(slot, server, creds, peers, &mut rng)?;
            active.push(next);
            next += 1;
        }
        if start.elapsed() > deadline {
            failures += active.len() + (n - next);
            errors.push(format!("deadline of {deadline:?} reached"));
            break;
        }
        epoll.wait(5, &mut ready)?;
        for &token in &ready {
            let i = token as usize;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            // Bounded: a slot has one request in flight, so few datagrams are queued.
            for _ in 0..8 {
                let len = match slot.sock.recv_from(&mut buf) {
                    Ok((len, _)) => len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let verdict = handle_response(&mut slot.hs, buf.get(..len).unwrap_or(&[]), peers);
                match verdict {
                    Verdict::Ignore => {}
                    Verdict::Next => send_stage(slot, server, creds, peers, &mut rng)?,
                    Verdict::Done | Verdict::Failed(_) => {
                        if let Verdict::Failed(why) = verdict {
                            failures += 1;
                            if errors.len() < 5 {
                                errors.push(why);
                            }
                        } else {
                            done.push(i);
                        }
                        active.retain(|&a| a != i);
                        break;
                    }
                }
            }
        }
        if last_sweep.elapsed() >= Duration::from_millis(20) {
            last_sweep = Instant::now();
            let mut k = 0;
            while k < active.len() {
                let slot = &mut slots[active[k]];
                if slot.sent_at.elapsed() < RETRANSMIT_AFTER {
                    k += 1;
                } else if slot.tries >= MAX_TRIES {
                    failures += 1;
                    if errors.len() < 5 {
                        errors.push(format!(
                            "{:?}: no answer after {MAX_TRIES} tries",
                            slot.hs.stage
                        ));
                    }
                    active.swap_remove(k);
                } else {
                    slot.sock.send_to(&slot.hs.msg, server)?;
                    slot.sent_at = Instant::now();
                    slot.tries += 1;
                    retransmits += 1;
                    k += 1;
                }
            }
        }
    }
    let elapsed = start.elapsed();
    done.sort_unstable();
    let mut allocations = Vec::with_capacity(done.len());
    // Take the finished slots out in index order (the order their sockets were made).
    let mut slots: Vec<Option<Slot>> = slots.into_iter().map(Some).collect();
    for i in done {
        if let Some(slot) = slots.get_mut(i).and_then(Option::take) {
            if let Some(relayed) = slot.hs.relayed {
                allocations.push(Allocation {
                    sock: slot.sock,
                    relayed,
                });
            }
        }
    }
    Ok(SetupOutcome {
        allocations,
        elapsed,
        failures,
        retransmits,
        errors,
    })
}

pub enum Verdict {
    Ignore,
    Next,
    Done,
    Failed(String),
}

/// What `bytes` from the server mean for the handshake: `Next` = send the (new)
/// current stage with [`build_request`].
pub fn handle_response(slot: &mut Handshake, bytes: &[u8], peers: &[SocketAddrV4]) -> Verdict {
    let Ok(msg) = Message::parse(bytes) else {
        return Verdict::Ignore;
    };
    if msg.transaction_id().0 != slot.tid {
        return Verdict::Ignore; // a late answer to an earlier stage's retransmission
    }
    match msg.class() {
        Class::Success => {
            if slot.stage == Stage::Allocate {
                let tid = msg.transaction_id();
                match msg
                    .get(attr::XOR_RELAYED_ADDRESS)
                    .map(|v| attr::decode_xor_address(v, &tid))
                {
                    Some(Ok(SocketAddr::V4(a))) => slot.relayed = Some(a),
                    _ => return Verdict::Failed("Allocate: no IPv4 XOR-RELAYED-ADDRESS".into()),
                }
            }
            let next = match slot.stage {
                Stage::Allocate if peers.is_empty() => None,
                Stage::Allocate => Some(Stage::Permission),
                Stage::Permission => Some(Stage::Bind(0)),
                Stage::Bind(j) if j + 1 < peers.len() => Some(Stage::Bind(j + 1)),
                Stage::Bind(_) => None,
            };
            match next {
                Some(stage) => {
                    slot.stage = stage;
                    Verdict::Next
                }
                None => Verdict::Done,
            }
        }
        Class::Error => {
            let (code, reason) = msg
                .get(attr::ERROR_CODE)
                .and_then(|v| attr::decode_error_code(v).ok())
                .unwrap_or((0, "no ERROR-CODE"));
            let nonce = msg.get(attr::NONCE);
            // RFC 8489 §9.2.5: 401 (first time) and 438 carry the nonce to retry with.
            let retry = (code == 401 && !slot.authed_with_nonce) || code == 438;
            match nonce {
                Some(nonce) if retry => {
                    let realm = msg
                        .get(attr::REALM)
                        .and_then(|v| attr::decode_str(v).ok())
                        .unwrap_or_default();
                    if realm != slot.realm || slot.key.is_empty() {
                        slot.realm = realm.to_owned();
                        slot.key.clear(); // recomputed by send_stage for the new realm
                    }
                    slot.nonce = Some(nonce.to_vec());
                    Verdict::Next
                }
                _ => Verdict::Failed(format!("{:?}: {code} {reason}", slot.stage)),
            }
        }
        _ => Verdict::Ignore,
    }
}

/// Sends the slot's current stage as a new transaction.
fn send_stage(
    slot: &mut Slot,
    server: SocketAddrV4,
    creds: &Creds,
    peers: &[SocketAddrV4],
    rng: &mut impl RngCore,
) -> io::Result<()> {
    slot.tries = 1;
    build_request(&mut slot.hs, creds, peers, rng);
    slot.sock.send_to(&slot.hs.msg, server)?;
    slot.sent_at = Instant::now();
    Ok(())
}

/// Writes the handshake's current stage, as a new transaction, into `slot.msg`.
pub fn build_request(
    slot: &mut Handshake,
    creds: &Creds,
    peers: &[SocketAddrV4],
    rng: &mut impl RngCore,
) {
    rng.fill_bytes(&mut slot.tid);
    if slot.nonce.is_some() && slot.key.is_empty() {
        // RFC 8489 §9.2.2: MD5("user:realm:password"), the key every RFC 5389-era
        // server (coturn) and Turnpike accept without PASSWORD-ALGORITHM.
        slot.key = long_term_key(
            attr::PASSWORD_ALGORITHM_MD5,
            &creds.user,
            &slot.realm,
            &creds.password,
        );
    }
    let method = match slot.stage {
        Stage::Allocate => method::ALLOCATE,
        Stage::Permission => method::CREATE_PERMISSION,
        Stage::Bind(_) => method::CHANNEL_BIND,
    };
    let mut b = MessageBuilder::new(
        &mut slot.msg,
        Class::Request,
        method,
        TransactionId(slot.tid),
    );
    match slot.stage {
        // RFC 8656 §7.1: REQUESTED-TRANSPORT is UDP (17) followed by three RFFU bytes.
        Stage::Allocate => b.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]),
        // One permission per peer IP covers all its ports (RFC 8656 §9); every peer
        // socket is on the same address, so the first stands for all.
        Stage::Permission => {
            if let Some(peer) = peers.first() {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::V4(*peer));
            }
        }
        Stage::Bind(j) => {
            let channel = 0x4000u32 + j as u32;
            // RFC 8656 §18.1: the number in the top 16 bits, then 16 RFFU bits.
            b.add_u32(attr::CHANNEL_NUMBER, channel << 16);
            if let Some(peer) = peers.get(j) {
                b.add_xor_address(attr::XOR_PEER_ADDRESS, SocketAddr::V4(*peer));
            }
        }
    }
    slot.authed_with_nonce = false;
    if let Some(nonce) = &slot.nonce {
        b.add(attr::USERNAME, creds.user.as_bytes());
        b.add(attr::REALM, slot.realm.as_bytes());
        b.add(attr::NONCE, nonce);
        b.add_message_integrity(&slot.key);
        slot.authed_with_nonce = true;
    }
}

/// Sends a STUN Binding request and waits up to `timeout` for any success answer:
/// "is a server listening there".
pub fn binding_ok(server: SocketAddrV4, timeout: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let mut tid = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut tid);
    let mut msg = Vec::new();
    MessageBuilder::new(
        &mut msg,
        Class::Request,
        method::BINDING,
        TransactionId(tid),
    );
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    while start.elapsed() < timeout {
        if sock.send_to(&msg, server).is_err() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if let Ok(len) = sock.recv(&mut buf) {
            if let Ok(m) = Message::parse(buf.get(..len).unwrap_or(&[])) {
                if m.transaction_id().0 == tid && m.class() == Class::Success {
                    return true;
                }
            }
        }
    }
    false
}
