//! What call-quality telemetry (`telemetry.rtp_quality`) costs the relay core per
//! packet, with no sockets: one sans-IO core (the virtual network of the core tests)
//! relays a call mix — 512 allocations, each a channel with an audio stream each way
//! (SRTP-shaped: RTP header in the clear, 20 ms apart, 1 % loss) — with the telemetry
//! off and on, in rounds that alternate the two.
//!
//! ```sh
//! cargo bench --bench core_quality                # time per packet, 5 rounds, medians
//! # instructions, whatever else the machine does: one fixed run each way
//! valgrind --tool=callgrind target/release/deps/core_quality-* --once off --packets 400000
//! ```
//!
//! The core's share is all that the setting changes: the relay's whole cost per packet
//! (syscalls included) is measured by `cargo bench --bench relay` (row `turnpike-rtpq`).

#![allow(clippy::unwrap_used)] // a benchmark that cannot set up stops with the reason

#[path = "../tests/core_harness/mod.rs"]
mod core_harness;

use std::time::{Duration, Instant};

use core_harness::*;
use turnpike::proto::channel_data;
use turnpike::proto::quota::Quotas;
use turnpike::proto::server::{PEER_HEADROOM, PEER_TAILROOM};
use turnpike::proto::{ClientId, RelayKey};

const ALLOCATIONS: usize = 512;
/// Packets per run, both directions together (`--packets N` changes it).
const PACKETS: usize = 4_000_000;
const ROUNDS: usize = 5;

struct Call {
    client: ClientId,
    relay: RelayKey,
    peer: std::net::SocketAddr,
}

/// A core with [`ALLOCATIONS`] channels to peers, telemetry `on` or off.
fn set_up(on: bool) -> (Net, Vec<Call>) {
    let shared = shared_pool(40_000..=49_999, Quotas::new(0, 0));
    let mut net = Net::cores(1, shared, |c| c.rtp_quality = on).remove(0);
    let calls = (0..ALLOCATIONS)
        .map(|i| {
            let mut client = net.client("alice");
            let relay = relay_key(client.allocate(&mut net));
            let peer = addr(&format!("8.8.{}.{}:5000", i / 250, 1 + i % 250));
            client.channel_bind(&mut net, 0x4000, peer).assert_ok();
            Call {
                client: client.id,
                relay,
                peer,
            }
        })
        .collect();
    (net, calls)
}

/// One run: [`PACKETS`] packets, alternating directions and allocations; returns the
/// time per packet.
fn run(on: bool, packets: usize) -> Duration {
    let (mut net, calls) = set_up(on);
    let mut to_peer = vec![0u8; 4 + 160];
    let mut from_peer = vec![0u8; PEER_HEADROOM + 160 + PEER_TAILROOM];
    channel_data::write_header(&mut to_peer, 0x4000, 160).unwrap();
    to_peer[4] = 0x80;
    to_peer[5] = 111;
    from_peer[PEER_HEADROOM] = 0x80;
    from_peer[PEER_HEADROOM + 1] = 111;
    let start_at = net.now;
    let started = Instant::now();
    let mut relayed = 0usize;
    for n in 0..packets / 2 {
        let call = &calls[n % ALLOCATIONS];
        let seq = (n / ALLOCATIONS) as u16;
        // 20 ms per packet of each stream; every 100th packet lost on the way.
        let now = start_at + Duration::from_millis(20) * (n / ALLOCATIONS) as u32;
        if seq % 100 == 42 {
            continue;
        }
        let rtp = |p: &mut [u8]| {
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(seq) * 960).to_be_bytes());
            p[8..12].copy_from_slice(&(n % ALLOCATIONS).to_be_bytes()[4..]);
        };
        rtp(&mut to_peer[4..]);
        relayed += usize::from(
            net.server
                .handle_client_input(now, call.client, &to_peer)
                .is_some(),
        );
        rtp(&mut from_peer[PEER_HEADROOM..]);
        relayed += usize::from(
            net.server
                .handle_peer_input(now, call.relay, call.peer, &mut from_peer, 160)
                .is_some(),
        );
    }
    let took = started.elapsed();
    assert!(
        relayed >= packets * 98 / 100,
        "relayed {relayed} of {packets}"
    );
    if on && packets > 0 {
        let streams: usize = net
            .server
            .allocation_reports(net.now)
            .iter()
            .map(|a| a.streams.len())
            .sum();
        assert_eq!(streams, 2 * ALLOCATIONS, "every stream measured");
    }
    took / relayed.max(1) as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1).cloned()
    };
    let packets = value("--packets").map_or(PACKETS, |n| n.parse().unwrap());
    if let Some(mode) = value("--once") {
        let on = mode == "on";
        let per = run(on, packets);
        println!(
            "rtp_quality {}: {per:?} per packet",
            if on { "on" } else { "off" }
        );
        return;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        off.push(run(false, packets));
        on.push(run(true, packets));
        eprintln!(
            "round {}: off {:?}, on {:?}",
            round + 1,
            off[round],
            on[round]
        );
    }
    let (off, on) = (median(off), median(on));
    println!(
        "core time per relayed packet ({packets} packets, {ALLOCATIONS} allocations, {ROUNDS} \
         alternating rounds, medians): rtp_quality off {off:?}, on {on:?}: +{:?} ({:.2}×)",
        on.saturating_sub(off),
        on.as_secs_f64() / off.as_secs_f64()
    );
}
