//! Real WebRTC calls (webrtc-rs) through Turnpike: signaling, relay-only ICE, DTLS-SRTP.
//!
//! Each test starts a relay and a signaling service in this process, then two call
//! clients (alice calls, bob answers) as tasks. Every wait is bounded; a missing piece
//! fails the test.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::tap::Tap;
use support::wire::{self, Kind};
use support::{options, Relay, Signal, LOOPBACK};
use turnpike::quic::client::Verify;
use turnpike_callclient::media::{PayloadSource, SAMPLES_PER_PACKET};
use turnpike_callclient::report::PairInfo;
use turnpike_callclient::{CallOptions, Payload, RelayTransport, Report, Role};

/// Whole call, sign-in to hangup; the clients bound each of their own steps too.
const CALL_BUDGET: Duration = Duration::from_secs(60);

/// Run bob (answering) and alice (calling bob) to the end of their call.
async fn call(signal: &str, alice: Payload, bob: Payload) -> (Report, Report) {
    let bob = options(signal, "bob", Role::Answer, bob);
    let alice = options(signal, "alice", Role::Call { to: "bob".into() }, alice);
    call_with(alice, bob).await
}

/// [`call`] with each side's options as given.
async fn call_with(alice: CallOptions, bob: CallOptions) -> (Report, Report) {
    let bob = tokio::spawn(turnpike_callclient::run(bob));
    let alice = tokio::spawn(turnpike_callclient::run(alice));
    let (alice, bob) = tokio::time::timeout(CALL_BUDGET, async { tokio::join!(alice, bob) })
        .await
        .expect("the call finishes within its budget");
    let alice = alice.expect("alice's task").expect("alice's call");
    let bob = bob.expect("bob's task").expect("bob's call");
    eprintln!(
        "alice: {}",
        serde_json::to_string(&alice).expect("report encodes")
    );
    eprintln!(
        "bob: {}",
        serde_json::to_string(&bob).expect("report encodes")
    );
    (alice, bob)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("candidate address is ip:port")
}

/// The selected pair is relay/relay on `relay`: both candidates are relayed addresses
/// Turnpike allocated (its IP, a port of its relay range).
fn assert_relay_pair(who: &str, pair: &PairInfo, relay: &Relay) {
    for (end, candidate) in [("local", &pair.local), ("remote", &pair.remote)] {
        assert_eq!(
            candidate.candidate_type, "relay",
            "{who}'s {end} candidate: {pair:?}"
        );
        assert_eq!(
            candidate.protocol, "udp",
            "{who}'s {end} candidate: {pair:?}"
        );
        let address = addr(&candidate.address);
        assert_eq!(address.ip(), LOOPBACK, "{who}'s {end} candidate: {pair:?}");
        assert!(
            relay.ports.contains(&address.port()),
            "{who}'s {end} candidate {address} is not a Turnpike relay port {:?}",
            relay.ports
        );
    }
}

/// At least this share of what one side sent must reach the other (the receiver may
/// stop a few packets early when the sender's hangup arrives, and webrtc-rs does not
/// hand the very first packet of a relayed stream to the application).
fn assert_received_most(receiver: &Report, sender: &Report) {
    let sent = sender.sent.packets;
    let got = receiver.received.packets;
    assert!(
        sent >= 100,
        "{} sent only {sent} packets in 3 s",
        sender.user
    );
    assert!(
        got * 10 >= sent * 8,
        "{} received {got} of {sent} packets {} sent",
        receiver.user,
        sender.user
    );
    assert_eq!(receiver.received.ssrc, Some(sender.sent.ssrc));
    assert_eq!(
        receiver.received.payload_type,
        Some(sender.sent.payload_type)
    );
}

/// Most packets arrived each way, and alice (440 Hz) and bob (660 Hz) each decoded the
/// other's tone.
fn assert_tones_both_ways(alice: &Report, bob: &Report) {
    assert_received_most(bob, alice);
    assert_received_most(alice, bob);
    let heard_by_bob = bob.received.tone_hz.expect("bob decoded PCMU");
    let heard_by_alice = alice.received.tone_hz.expect("alice decoded PCMU");
    assert!(
        (heard_by_bob - 440.0).abs() < 10.0,
        "bob heard {heard_by_bob} Hz"
    );
    assert!(
        (heard_by_alice - 660.0).abs() < 10.0,
        "alice heard {heard_by_alice} Hz"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_call_relay_to_relay_through_turnpike_with_audio_both_ways() {
    let started = Instant::now();
    let relay = Relay::start();
    let signal = Signal::start(vec![format!("turn:{}?transport=udp", relay.addr)]).await;
    let (alice, bob) = call(&signal.url, Payload::Tone(440.0), Payload::Tone(660.0)).await;

    let alice_pair = alice
        .selected_pair
        .as_ref()
        .expect("alice has a selected pair");
    let bob_pair = bob.selected_pair.as_ref().expect("bob has a selected pair");
    assert_relay_pair("alice", alice_pair, &relay);
    assert_relay_pair("bob", bob_pair, &relay);
    // Each side's remote candidate is the other's relayed address: media went
    // relay port → relay port inside Turnpike, never client to client.
    assert_eq!(alice_pair.remote.address, bob_pair.local.address);
    assert_eq!(bob_pair.remote.address, alice_pair.local.address);
    assert_ne!(alice_pair.local.address, bob_pair.local.address);

    // The audio survived SRTP both ways: each side hears the other's tone.
    assert_tones_both_ways(&alice, &bob);
    // One side hung up; the other was told so by signaling.
    let endings = [alice.ended.as_str(), bob.ended.as_str()];
    assert!(endings.contains(&"hangup_sent"), "{endings:?}");
    eprintln!("relay-to-relay call test took {:?}", started.elapsed());
}

/// Alice reaches the relay over QUIC (a CONNECT-UDP tunnel, the call client's own
/// `turnpike tunnel` code), bob over UDP. Mid-call alice's tunnel moves to a new local
/// socket, as on a network change: QUIC migrates the connection, her allocation and
/// relayed address stay, and the audio keeps flowing both ways with no ICE restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_over_quic_survives_a_network_change_without_ice_restart() {
    let relay = Relay::start_with(true);
    let quic = relay.quic_addr.expect("a QUIC listener");
    let signal = Signal::start(vec![
        format!("turn:{}?transport=udp", relay.addr),
        format!("masque://{quic}"),
    ])
    .await;
    let media_time = Duration::from_secs(5);
    let mut alice = options(
        &signal.url,
        "alice",
        Role::Call { to: "bob".into() },
        Payload::Tone(440.0),
    );
    alice.relay_transport = RelayTransport::Quic(Verify::Insecure);
    alice.media_time = media_time;
    alice.rebind_after = Some(Duration::from_millis(2000));
    let mut bob = options(&signal.url, "bob", Role::Answer, Payload::Tone(660.0));
    bob.media_time = media_time;
    let (alice, bob) = call_with(alice, bob).await;

    // Alice's tunnel did move (and bob has none).
    assert_eq!((alice.tunnel_moves, bob.tunnel_moves), (1, 0));
    // Both relayed by Turnpike, relay to relay; alice's allocation came through the
    // tunnel (her only ICE server was the tunnel's local port).
    let alice_pair = alice.selected_pair.as_ref().expect("alice's pair");
    let bob_pair = bob.selected_pair.as_ref().expect("bob's pair");
    assert_relay_pair("alice", alice_pair, &relay);
    assert_relay_pair("bob", bob_pair, &relay);
    // No ICE restart: at the end each side still uses the pair of the other's relayed
    // address it started with (one allocation each, never replaced).
    assert_eq!(alice_pair.remote.address, bob_pair.local.address);
    assert_eq!(bob_pair.remote.address, alice_pair.local.address);
    assert_tones_both_ways(&alice, &bob);
    // The move cost at most a few packets: no gap in what alice heard over 300 ms.
    assert!(
        alice.received.max_gap_ms <= 300,
        "alice's longest gap was {} ms",
        alice.received.max_gap_ms
    );
    assert!(
        bob.received.max_gap_ms <= 300,
        "bob's longest gap was {} ms",
        bob.received.max_gap_ms
    );
}

/// The plaintext both clients put in every RTP payload. The relay must never see it.
const MARKER: &[u8] = b"TURNPIKE-PLAINTEXT-MEDIA|";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_forwards_srtp_whose_payload_it_cannot_read() {
    let started = Instant::now();
    let relay = Relay::start();
    // Both clients reach Turnpike through the tap (see support/tap.rs for why).
    let tap = Tap::start(relay.addr).await;
    let signal = Signal::start(vec![format!("turn:{}?transport=udp", tap.addr)]).await;
    let (alice, bob) = call(
        &signal.url,
        Payload::Marker(MARKER.to_vec()),
        Payload::Marker(MARKER.to_vec()),
    )
    .await;
    assert_relay_pair("alice", alice.selected_pair.as_ref().expect("pair"), &relay);
    assert_relay_pair("bob", bob.selected_pair.as_ref().expect("pair"), &relay);

    // The endpoints decrypted the marker: it really was the media sent.
    assert_received_most(&bob, &alice);
    assert_received_most(&alice, &bob);
    assert!(bob.received.marker_packets * 10 >= alice.sent.packets * 8);
    assert!(alice.received.marker_packets * 10 >= bob.sent.packets * 8);

    let captured = tap.captured();
    // 1. The plaintext appears nowhere on the wire, in any datagram either way.
    for datagram in &captured {
        assert!(
            !wire::contains(&datagram.bytes, MARKER),
            "the relay path carried the plaintext marker: {datagram:?}"
        );
    }
    // 2. What Turnpike forwarded to the clients is SRTP: RTP headers in clear with the
    // senders' SSRCs, payload type and ascending sequence numbers; payloads that are
    // the plaintext's length plus an authentication tag but not the plaintext.
    let plaintext = PayloadSource::new(Payload::Marker(MARKER.to_vec())).next_packet();
    let mut streams: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for datagram in captured.iter().filter(|d| !d.to_relay) {
        let Some(inner) = wire::turn_payload(&datagram.bytes) else {
            continue;
        };
        let kind = wire::kind(inner);
        *kinds.entry(format!("{kind:?}")).or_default() += 1;
        if kind != Kind::Rtp {
            continue;
        }
        let header = wire::rtp_header(inner).expect("a well-formed RTP header");
        assert_eq!(header.version, 2);
        assert_eq!(header.payload_type, 0, "PCMU");
        assert!(
            header.ssrc == alice.sent.ssrc || header.ssrc == bob.sent.ssrc,
            "unknown SSRC {:08x}",
            header.ssrc
        );
        let payload = inner.get(header.header_len..).unwrap_or_default();
        // RFC 3711 §3.1: the SRTP payload is the encrypted plaintext (AES counter mode
        // keeps its length), followed by the authentication tag (10 bytes for
        // AES_CM_128_HMAC_SHA1_80, 16 for AEAD_AES_128_GCM).
        let tag = payload.len().checked_sub(SAMPLES_PER_PACKET);
        assert!(
            matches!(tag, Some(10 | 16)),
            "SRTP payload of {} bytes for {SAMPLES_PER_PACKET} bytes of media",
            payload.len()
        );
        assert_ne!(
            payload.get(..SAMPLES_PER_PACKET),
            Some(plaintext.as_slice())
        );
        streams
            .entry(header.ssrc)
            .or_default()
            .push(header.sequence_number);
    }
    eprintln!("relayed to clients, by kind: {kinds:?}");
    assert!(
        kinds.get("Dtls").is_some_and(|&n| n > 0),
        "the DTLS handshake went through the relay"
    );
    for (ssrc, report) in [(alice.sent.ssrc, &alice), (bob.sent.ssrc, &bob)] {
        let sequence = streams.get(&ssrc).map(Vec::as_slice).unwrap_or_default();
        assert!(
            sequence.len() as u64 * 10 >= report.sent.packets * 8,
            "Turnpike forwarded {} RTP packets of {}'s {}",
            sequence.len(),
            report.user,
            report.sent.packets
        );
        for pair in sequence.windows(2) {
            // RFC 3550 §A.1: sequence numbers count up modulo 2^16.
            let step = pair[1].wrapping_sub(pair[0]);
            assert!(
                (1..0x8000).contains(&step),
                "{}'s sequence numbers go {} → {}",
                report.user,
                pair[0],
                pair[1]
            );
        }
    }
    eprintln!("SRTP capture test took {:?}", started.elapsed());
}
