//! A UDP proxy between TURN clients and the relay, like the tap (see tap.rs), that
//! impairs one user's media on its way to the relay: a lossy or jittery uplink.
//!
//! The shim learns which client is that user from the USERNAME of its Allocate request
//! (a TURN REST username, `<expiry>:<user>`). From then on it impairs that client's
//! ChannelData datagrams whose payload is RTP (RFC 7983: first byte 128-191, second not
//! 192-223, which is RTCP), and nothing else: STUN, ICE checks, DTLS and RTCP pass
//! untouched, so call setup stays reliable. Every other client, and everything the relay
//! sends back, passes as through the tap.
//!
//! It keeps a record of every client's RTP in ChannelData (sequence number, timestamp,
//! when it arrived and when it left), from which a test computes what the relay should
//! report.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use turnpike::proto::stun::{attr, method, Class, Message};

use super::wire::{self, Kind};

/// What happens to each impaired datagram.
#[derive(Debug, Clone, Copy)]
pub enum Impairment {
    /// Dropped with this probability, else forwarded at once.
    Loss(f64),
    /// Forwarded after a delay drawn uniformly from `min..=max`, none dropped. Each
    /// datagram has its own timer, so order is not kept: one overtakes the one before it
    /// when their delays differ by more than the time between them.
    Delay { min: Duration, max: Duration },
}

/// What the shim did to the impaired user's RTP so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// RTP datagrams dropped.
    pub dropped: u64,
    /// RTP datagrams forwarded (at once, or after their delay).
    pub passed: u64,
}

impl Counts {
    /// The share of the user's RTP datagrams dropped.
    pub fn drop_ratio(&self) -> f64 {
        let total = self.dropped + self.passed;
        if total == 0 {
            0.0
        } else {
            self.dropped as f64 / total as f64
        }
    }
}

/// One RTP datagram a client sent through the shim.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Whether it came from the impaired user.
    pub impaired: bool,
    /// Its RTP sequence number and timestamp (clear in SRTP).
    pub seq: u16,
    pub timestamp: u32,
    /// When it reached the shim.
    pub arrived: Instant,
    /// When the shim sends it on (`arrived` plus its delay); `None`: dropped.
    pub departs: Option<Instant>,
}

/// The shim runs on a thread of its own, with its own runtime, so that the timing of
/// what it forwards does not depend on how busy the call clients keep the test's runtime.
pub struct Shim {
    pub addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    log: Arc<Mutex<Vec<Sent>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Shim {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shim {
    /// Listen on 127.0.0.1, forward to `relay`, and impair `user`'s RTP as `impairment`
    /// says, drawing from a random generator seeded with `seed`.
    pub fn start(relay: SocketAddr, user: &str, impairment: Impairment, seed: u64) -> Shim {
        let front = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the shim");
        front.set_nonblocking(true).expect("a non-blocking socket");
        let addr = front.local_addr().expect("shim address");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = State {
            suffix: format!(":{user}").into_bytes(),
            impairment,
            rng: StdRng::seed_from_u64(seed),
            counts: counts.clone(),
            log: log.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the shim's runtime");
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let front = Arc::new(UdpSocket::from_std(front).expect("the shim's socket"));
                tokio::select! {
                    () = run(front, relay, state) => {}
                    _ = stopped => {}
                }
            });
        });
        Shim {
            addr,
            counts,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// What it did so far.
    pub fn counts(&self) -> Counts {
        *self.counts.lock().expect("shim counts lock")
    }

    /// Every client's RTP that crossed it so far (ChannelData only), in arrival order.
    pub fn sent(&self) -> Vec<Sent> {
        self.log.lock().expect("shim log lock").clone()
    }
}

struct State {
    /// The end of the impaired user's REST username.
    suffix: Vec<u8>,
    impairment: Impairment,
    rng: StdRng,
    counts: Arc<Mutex<Counts>>,
    log: Arc<Mutex<Vec<Sent>>>,
}

impl State {
    /// What to do with an RTP datagram of the impaired user: `None` to drop it, else
    /// how long to hold it.
    fn impair(&mut self) -> Option<Duration> {
        let delay = match self.impairment {
            Impairment::Loss(probability) => {
                (!self.rng.gen_bool(probability)).then_some(Duration::ZERO)
            }
            Impairment::Delay { min, max } => Some(self.rng.gen_range(min..=max)),
        };
        let mut counts = self.counts.lock().expect("shim counts lock");
        match delay {
            Some(_) => counts.passed += 1,
            None => counts.dropped += 1,
        }
        delay
    }
}

/// Whether `datagram` is a TURN Allocate request whose USERNAME ends with `suffix`.
fn allocates_as(datagram: &[u8], suffix: &[u8]) -> bool {
    let Ok(message) = Message::parse(datagram) else {
        return false;
    };
    message.class() == Class::Request
        && message.method() == method::ALLOCATE
        && message
            .get(attr::USERNAME)
            .is_some_and(|username| username.ends_with(suffix))
}

/// The RTP header of a ChannelData datagram (RFC 8656 §12: first two bits 01) that
/// carries RTP.
fn channel_rtp(datagram: &[u8]) -> Option<wire::RtpHeader> {
    if !matches!(datagram.first(), Some(0x40..=0x7F)) {
        return None;
    }
    let payload = wire::turn_payload(datagram)?;
    if wire::kind(payload) != Kind::Rtp {
        return None;
    }
    wire::rtp_header(payload)
}

async fn run(front: Arc<UdpSocket>, relay: SocketAddr, mut state: State) {
    // One upstream socket per client, as in the tap.
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut impaired: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buf).await else {
            break;
        };
        let arrived = Instant::now();
        let bytes = buf.get(..len).unwrap_or_default().to_vec();
        let upstream = match upstreams.entry(client) {
            Entry::Occupied(known) => known.get().0.clone(),
            Entry::Vacant(new) => {
                let upstream =
                    Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
                upstream.connect(relay).await.expect("connect upstream");
                let back = tokio::spawn(relay_to_client(upstream.clone(), front.clone(), client));
                new.insert((upstream.clone(), back));
                upstream
            }
        };
        if impaired.is_none() && allocates_as(&bytes, &state.suffix) {
            impaired = Some(client);
        }
        let Some(rtp) = channel_rtp(&bytes) else {
            let _ = upstream.send(&bytes).await;
            continue;
        };
        let is_impaired = impaired == Some(client);
        let delay = if is_impaired {
            state.impair()
        } else {
            Some(Duration::ZERO)
        };
        state.log.lock().expect("shim log lock").push(Sent {
            impaired: is_impaired,
            seq: rtp.sequence_number,
            timestamp: rtp.timestamp,
            arrived,
            departs: delay.map(|d| arrived + d),
        });
        match delay {
            None => {}
            Some(Duration::ZERO) => {
                let _ = upstream.send(&bytes).await;
            }
            Some(delay) => {
                // Ends after `delay` (at most the impairment's `max`) and one send.
                tokio::spawn(async move {
                    tokio::time::sleep_until((arrived + delay).into()).await;
                    let _ = upstream.send(&bytes).await;
                });
            }
        }
    }
    for (_, (_, back)) in upstreams {
        back.abort();
    }
}

async fn relay_to_client(upstream: Arc<UdpSocket>, front: Arc<UdpSocket>, client: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    while let Ok(len) = upstream.recv(&mut buf).await {
        let _ = front
            .send_to(buf.get(..len).unwrap_or_default(), client)
            .await;
    }
}
