//! The packet path allocates nothing in steady state (DESIGN.md §3): after warm-up,
//! 100 000 packets relayed through a real worker (client → peer by ChannelData and
//! peer → client) cause zero heap allocations anywhere in the process.
//!
//! A counting global allocator sees every allocation of every thread. The only threads
//! are the relay's worker and this test, whose measured loop is itself allocation-free
//! (std UDP sockets, preallocated buffers, no formatting), so the count is the worker's.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod turn_udp;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use turn_udp::{relay_config, Client};
use turnpike::net::start;
use turnpike::proto::channel_data;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller's contract is passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CHANNEL: u16 = 0x4001;

#[test]
fn relaying_allocates_nothing_after_warm_up() {
    let loopback = "127.0.0.1".parse().expect("literal");
    let relay = start(relay_config(loopback, "127.0.0.1/32", 1)).expect("relay starts");
    let server = relay.local_addrs()[0].1;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("client socket");
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer = UdpSocket::bind("127.0.0.1:0").expect("peer socket");
    peer.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let peer_addr = peer.local_addr().expect("peer addr");
    let mut client = Client::new(sock, server);
    let relayed = client.allocate();
    client.channel_bind(CHANNEL, peer_addr);

    // An SRTP-sized payload each way, framed once up front.
    let payload = [0xA5u8; 172];
    let mut to_peer = vec![0u8; 4 + payload.len()];
    channel_data::write_header(&mut to_peer, CHANNEL, payload.len()).expect("header");
    to_peer[4..].copy_from_slice(&payload);
    let mut buf = vec![0u8; 2048];

    // Lock-step bursts: BURST packets each way, then read them back.
    const BURST: usize = 16;
    let mut relay_round = |rounds: usize| -> usize {
        let mut received = 0;
        for _ in 0..rounds {
            for _ in 0..BURST {
                let _ = client.sock.send_to(&to_peer, server);
                let _ = peer.send_to(&payload, relayed);
            }
            for _ in 0..BURST {
                if let Ok(n) = peer.recv(&mut buf) {
                    received += usize::from(n == payload.len());
                }
                if let Ok(n) = client.sock.recv(&mut buf) {
                    received += usize::from(n == to_peer.len() && buf[..2] == to_peer[..2]);
                }
            }
        }
        received
    };

    // Warm-up: first packets may grow the worker's pending-send vectors to their
    // steady size, and the first metrics publish happens.
    let warm = relay_round(200);
    assert!(
        warm > 2 * 200 * BURST * 9 / 10,
        "warm-up relayed only {warm}"
    );

    let rounds = 100_000 / (2 * BURST);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let received = relay_round(rounds);
    let allocations = ALLOCATIONS.load(Ordering::SeqCst) - before;

    let sent = 2 * rounds * BURST;
    assert!(
        received >= sent * 99 / 100,
        "relayed {received} of {sent} packets"
    );
    assert_eq!(
        allocations, 0,
        "{allocations} heap allocations while relaying {received} packets"
    );
    relay.shutdown();
}
