//! Call-quality telemetry in the core (`ServerConfig::rtp_quality`), on virtual time:
//! payloads classified on both paths, each RTP stream's loss and jitter measured per
//! direction, the allocation report, and nothing at all when it is off.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod core_harness;

use std::time::Duration;

use core_harness::*;
use turnpike::proto::quality::{Jitter, MediaKind, PayloadKind};
use turnpike::proto::stats::Direction;
use turnpike::proto::Transport;

/// An SRTP-shaped packet: RTP header in the clear, 40 bytes of "ciphertext".
fn rtp(seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xA5; 40]);
    p
}

const UP: u32 = 0x1111_1111;
const DOWN: u32 = 0x2222_2222;

/// Ten seconds of a two-way Opus call over a channel (20 ms packets): every 20th
/// packet the client sends is lost before the relay, and every other packet from the
/// peer arrives 6 ms late. With a DTLS record and an RTCP report each way per second.
fn call(net: &mut Net) -> (Client, turnpike::proto::RelayKey) {
    let mut alice = net.client("alice");
    let relayed = alice.allocate(net);
    let relay = relay_key(relayed);
    alice.channel_bind(net, 0x4000, addr(PEER_A)).assert_ok();
    for i in 0..500u16 {
        let ts = u32::from(i) * 960;
        if i % 20 != 7 {
            alice.channel_data(net, 0x4000, &rtp(i, ts, UP));
        }
        if i % 50 == 0 {
            alice.channel_data(net, 0x4000, &[23, 0xfe, 0xfd, 0, 1]);
            alice.channel_data(net, 0x4000, &[0x80, 200, 0, 1, 0, 0, 0, 0]);
            net.peer_send(relay, addr(PEER_A), &[0x81, 201, 0, 1, 0, 0, 0, 0]);
        }
        let late = i % 2 == 1;
        if late {
            net.advance(Duration::from_millis(6));
        }
        net.peer_send(relay, addr(PEER_A), &rtp(i, ts, DOWN));
        net.advance(Duration::from_millis(if late { 14 } else { 20 }));
    }
    (alice, relay)
}

#[test]
fn each_direction_of_a_call_is_measured_on_its_own() {
    let mut net = Net::with(|c| c.rtp_quality = true);
    call(&mut net);
    let q = &net.server.stats().quality;
    let (up, down) = (Direction::ToPeer as usize, Direction::ToClient as usize);
    assert_eq!(q.payloads[up][PayloadKind::Rtp as usize], 475);
    assert_eq!(q.payloads[up][PayloadKind::Dtls as usize], 10);
    assert_eq!(q.payloads[up][PayloadKind::Rtcp as usize], 10);
    assert_eq!(q.payloads[down][PayloadKind::Rtp as usize], 500);
    assert_eq!(q.payloads[down][PayloadKind::Rtcp as usize], 10);
    // One report interval closed each way (at 5 s; the next would close at 10 s).
    let audio = MediaKind::Audio as usize;
    assert_eq!(q.loss[up][audio].count, 1);
    assert_eq!(q.loss[down][audio].count, 1);
    // Uplink: 5% lost; downlink: none. The counter has the uplink's gaps that the 5-s
    // report found more than 100 packets behind the newest (250): 7, 27, …, 147.
    assert_eq!(q.lost[down], 0);
    assert_eq!(q.lost[up], 8);
    assert_eq!(q.reordered, [0, 0]);

    let reports = net.server.allocation_reports(net.now);
    assert_eq!(reports.len(), 1);
    let a = &reports[0];
    assert_eq!(a.transport, Transport::Udp);
    assert_eq!(a.user, "alice");
    assert_eq!(a.age, Duration::from_secs(10));
    assert_eq!(a.traffic[up].packets, 475 + 20);
    assert_eq!(a.traffic[down].packets, 510);
    // 50 packets a second each way, less the uplink's losses.
    assert!((45..=50).contains(&a.traffic[up].pps), "{:?}", a.traffic);
    assert_eq!(a.traffic[down].pps, 50, "{:?}", a.traffic);
    assert_eq!(a.streams.len(), 2);
    let up_stream = a
        .streams
        .iter()
        .find(|s| s.direction == Direction::ToPeer)
        .unwrap();
    let down_stream = a
        .streams
        .iter()
        .find(|s| s.direction == Direction::ToClient)
        .unwrap();
    assert_eq!(up_stream.jitter_method, Jitter::Rtp(48_000));
    assert_eq!(up_stream.media, MediaKind::Audio);
    assert_eq!((up_stream.expected, up_stream.lost), (500, 25));
    assert!((up_stream.loss_ratio() - 0.05).abs() < 1e-9);
    assert_eq!(down_stream.lost, 0);
    // The uplink arrives on time; the downlink's alternating 6 ms lateness is jitter.
    assert!(up_stream.jitter.unwrap() < 0.0005, "{up_stream:?}");
    let j = down_stream.jitter.unwrap();
    assert!((0.005..0.007).contains(&j), "downlink jitter {j}");
}

#[test]
fn send_and_data_indications_are_measured_too() {
    let mut net = Net::with(|c| c.rtp_quality = true);
    let mut alice = net.client("alice");
    let relay = relay_key(alice.allocate(&mut net));
    alice
        .create_permission(&mut net, &[addr(PEER_A)])
        .assert_ok();
    for i in 0..10u16 {
        alice.send_indication(&mut net, addr(PEER_A), &rtp(i * 2, 0, UP));
        net.peer_send(relay, addr(PEER_A), &rtp(i, 0, DOWN));
    }
    let report = &net.server.allocation_reports(net.now)[0];
    let up = report
        .streams
        .iter()
        .find(|s| s.direction == Direction::ToPeer)
        .unwrap();
    assert_eq!((up.expected, up.received, up.lost), (19, 10, 9));
    let q = &net.server.stats().quality;
    assert_eq!(q.payloads[1][PayloadKind::Rtp as usize], 10);
}

#[test]
fn off_by_default_it_reads_nothing() {
    let mut net = Net::new();
    let (_, relay) = call(&mut net);
    assert_eq!(
        net.server.stats().quality,
        Default::default(),
        "no payload is classified"
    );
    let report = &net.server.allocation_reports(net.now)[0];
    assert!(report.streams.is_empty());
    // The allocation's own traffic counters do not look inside payloads.
    assert_eq!(report.traffic[1].packets, 510);
    assert!(net.peer_send(relay, addr(PEER_A), b"x").is_some());
}

#[test]
fn rtp_quality_keeps_packets_off_the_fast_path() {
    let mut net = Net::with(|c| {
        c.rtp_quality = true;
        c.fast_path = true;
    });
    let mut alice = net.client("alice");
    alice.allocate(&mut net);
    alice
        .channel_bind(&mut net, 0x4000, addr(PEER_A))
        .assert_ok();
    assert!(net.server.poll_fast_path(net.now).is_none());
}
