//! Call-quality telemetry in a running `turnpike serve` (`[telemetry] rtp_quality`):
//! `GET /v1/allocations` on the loopback metrics listener and the `/metrics` families,
//! from a TURN client relaying an RTP stream each way over a channel. The loss a shim
//! adds on a real call's link, and the jitter it adds, are measured against the truth
//! in `callclient/tests/quality.rs`; here the client's stream skips known sequence
//! numbers, so the expected counts are exact.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
mod turn_udp;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis_server;
use support::{TurnpikeConfig, TurnpikeProcess};
use turn_udp::{Client, Turn, PASS, REALM, USER};
use turnpike::proto::channel_data;

const CHANNEL: u16 = 0x4000;
/// Packets each way, 20 ms apart: 6 s, so one 5-second report interval closes.
const PACKETS: u16 = 300;

fn relay(rtp_quality: bool) -> TurnpikeProcess {
    relay_with(rtp_quality, "")
}

/// A relay with `rtp_quality` and `extra` TOML sections.
fn relay_with(rtp_quality: bool, extra: &str) -> TurnpikeProcess {
    TurnpikeProcess::start(TurnpikeConfig {
        realm: REALM.into(),
        users: vec![format!("{USER}:{PASS}")],
        extra_toml: format!("[telemetry]\nrtp_quality = {rtp_quality}\n{extra}"),
        ..TurnpikeConfig::default()
    })
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, 111];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 960).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0xA5; 100]);
    p
}

/// Six seconds of a call leg through `server`: the client sends RTP over a channel to a
/// peer, skipping every sequence number ≡ 3 (mod 25) (12 of 300: 4%), with a DTLS
/// record and an RTCP report at the start; the peer answers each packet with one of its
/// own stream, none skipped. Returns how many packets each side received.
fn call_leg(server: &TurnpikeProcess) -> (usize, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut client = Client::new(sock, server.udp_addr());
    let relayed = client.allocate();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    client.channel_bind(CHANNEL, peer.local_addr().unwrap());
    let send = |client: &Client, payload: &[u8]| {
        let mut msg = vec![0u8; 4 + payload.len()];
        channel_data::write_header(&mut msg, CHANNEL, payload.len()).unwrap();
        msg[4..].copy_from_slice(payload);
        client.sock.send_to(&msg, client.server).unwrap();
    };
    send(&client, &[22, 0xfe, 0xfd, 0, 0, 0, 0, 0]);
    send(&client, &[0x80, 200, 0, 6, 0, 0, 0, 1]);
    let mut buf = [0u8; 2048];
    for kind in ["DTLS", "RTCP"] {
        peer.recv(&mut buf)
            .unwrap_or_else(|e| panic!("the {kind} packet reaches the peer: {e}"));
    }
    let start = Instant::now();
    let (mut at_peer, mut at_client) = (0, 0);
    for seq in 0..PACKETS {
        let due = start + Duration::from_millis(20) * u32::from(seq);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if seq % 25 != 3 {
            send(&client, &rtp(seq, 0xA11CE));
            if let Ok((n, from)) = peer.recv_from(&mut buf) {
                assert_eq!(from, relayed);
                at_peer += usize::from(buf[8..n] == rtp(seq, 0xA11CE)[8..]);
            }
        }
        peer.send_to(&rtp(seq, 0xB0B), relayed).unwrap();
        if let Ok(n) = client.sock.recv(&mut buf) {
            at_client += usize::from(buf[12..n] == rtp(seq, 0xB0B)[8..]);
        }
    }
    (at_peer, at_client)
}

fn get_json(server: &TurnpikeProcess, path: &str) -> Value {
    let (status, body) = server.http("GET", path).unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

fn stream<'a>(allocation: &'a Value, direction: &str) -> &'a Value {
    allocation["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["direction"] == direction)
        .unwrap_or_else(|| panic!("no {direction} stream in {allocation}"))
}

#[test]
fn the_admin_endpoint_and_metrics_show_each_streams_loss_and_jitter() {
    let server = relay(true);
    let (at_peer, at_client) = call_leg(&server);
    assert_eq!(at_peer, usize::from(PACKETS) - 12);
    assert_eq!(at_client, usize::from(PACKETS));

    let doc = get_json(&server, "/v1/allocations");
    assert_eq!(doc["rtp_quality"], true);
    let allocations = doc["allocations"].as_array().unwrap();
    assert_eq!(allocations.len(), 1, "{doc}");
    let a = &allocations[0];
    assert_eq!(a["transport"], "udp");
    assert_eq!(a["user"], USER);
    assert_eq!(a["channels"], 1);
    assert!(a["age_secs"].as_f64().unwrap() >= 5.9, "{a}");
    assert_eq!(a["to_peer"]["packets"], u64::from(PACKETS) - 12 + 2);
    assert_eq!(a["to_client"]["packets"], u64::from(PACKETS));
    // Neither client nor peer addresses, nor SSRCs, are shown.
    let text = a.to_string();
    assert!(!text.contains(&server.udp_addr().to_string()), "{text}");
    assert!(
        !text.contains(&0xA11CE.to_string()) && !text.contains("a11ce"),
        "{text}"
    );

    let up = stream(a, "to_peer");
    assert_eq!(up["kind"], "audio");
    assert_eq!(up["clock_rate"], 48_000);
    assert_eq!(up["jitter_method"], "rtp");
    assert_eq!(up["expected"], u64::from(PACKETS));
    assert_eq!(up["lost"], 12);
    assert!(
        (up["loss_ratio"].as_f64().unwrap() - 0.04).abs() < 1e-9,
        "{up}"
    );
    assert!(up["interval_loss_ratio"].as_f64().is_some(), "{up}");
    // Its size depends on this host's scheduling; the unit tests check the arithmetic.
    let jitter = up["jitter_ms"].as_f64().unwrap();
    assert!((0.0..1000.0).contains(&jitter), "{up}");
    let down = stream(a, "to_client");
    assert_eq!(
        (down["expected"].as_u64(), down["lost"].as_u64()),
        (Some(300), Some(0))
    );

    let m = server.wait_for_metrics("the RTP counters published", |m| {
        m.sum(
            "turnpike_relayed_payloads_total",
            &[("direction", "to_peer"), ("kind", "rtp")],
        ) == f64::from(PACKETS - 12)
    });
    let payloads = |dir, kind| {
        m.sum(
            "turnpike_relayed_payloads_total",
            &[("direction", dir), ("kind", kind)],
        )
    };
    assert_eq!(payloads("to_peer", "dtls"), 1.0);
    assert_eq!(payloads("to_peer", "rtcp"), 1.0);
    assert_eq!(payloads("to_client", "rtp"), f64::from(PACKETS));
    // One interval closed per stream, at 5 s (packet 250), its loss observed; the
    // counter has the gaps then more than 100 behind the newest: 3, 28, …, 128. On a
    // leg a loaded host stretched, a later close (or a second one) adds 153 and 178.
    let lost = m.sum(
        "turnpike_rtp_lost_packets_total",
        &[("direction", "to_peer")],
    );
    assert!((6.0..=8.0).contains(&lost), "lost {lost}");
    assert_eq!(
        m.sum(
            "turnpike_rtp_lost_packets_total",
            &[("direction", "to_client")]
        ),
        0.0
    );
    let count = |name: &str, dir| m.sum(name, &[("direction", dir), ("kind", "audio")]);
    let intervals = count("turnpike_rtp_loss_ratio_count", "to_peer");
    assert!((1.0..=2.0).contains(&intervals), "{intervals} intervals");
    assert_eq!(
        count("turnpike_rtp_loss_ratio_count", "to_client"),
        intervals
    );
    assert_eq!(
        count("turnpike_rtp_jitter_seconds_count", "to_peer"),
        intervals
    );
    let mean = count("turnpike_rtp_loss_ratio_sum", "to_peer") / intervals;
    assert!(
        (0.03..=0.045).contains(&mean),
        "mean interval loss ratio {mean}"
    );
    // The lossless direction's observations are all in the lowest bucket (le 0).
    assert_eq!(
        m.sum(
            "turnpike_rtp_loss_ratio_bucket",
            &[("direction", "to_client"), ("kind", "audio"), ("le", "0")]
        ),
        intervals
    );
}

#[test]
fn off_by_default_allocations_are_listed_without_reading_payloads() {
    let server = relay(false);
    let (at_peer, _) = call_leg(&server);
    assert_eq!(at_peer, usize::from(PACKETS) - 12);
    let doc = get_json(&server, "/v1/allocations");
    assert_eq!(doc["rtp_quality"], false);
    let a = &doc["allocations"][0];
    assert_eq!(a["streams"].as_array().map(Vec::len), Some(0), "{a}");
    assert_eq!(a["to_client"]["packets"], u64::from(PACKETS));
    let m = server.settled_metrics();
    assert!(
        !m.text.contains("turnpike_rtp_"),
        "quality metrics while off"
    );
    assert!(!m.text.contains("turnpike_relayed_payloads_total"));
}

/// The endpoint reads; it changes nothing, so it answers only GET.
#[test]
fn only_get_is_answered() {
    let server = relay(true);
    let (status, _) = server.http("POST", "/v1/allocations").unwrap();
    assert_eq!(status, 405);
    let (status, _) = server.http("GET", "/v1/allocations").unwrap();
    assert_eq!(status, 200);
}

/// With a fleet registry, the relay's heartbeat carries each user's uplink loss and
/// jitter, which signaling passes to the user's call (`call_quality`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_heartbeat_carries_each_users_uplink() {
    let (redis, mut conn) = redis_server().await;
    let fleet = format!("[fleet]\nredis_url = \"{}\"\nid = \"relay-q\"\n", redis.url);
    let server = relay_with(true, &fleet);
    let leg = tokio::task::spawn_blocking(move || (call_leg(&server), server));
    let ((at_peer, _), _server) = leg.await.unwrap();
    assert_eq!(at_peer, usize::from(PACKETS) - 12);
    // The beat after the stream's first 5-second interval closed.
    let deadline = Instant::now() + Duration::from_secs(3);
    let quality = loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let snapshot = turnpike_signaling::fleet::read(&mut conn, now)
            .await
            .unwrap();
        let beat = snapshot.relays.into_iter().find(|r| r.id == "relay-q");
        if let Some(q) = beat.map(|b| b.quality).filter(|q| !q.is_empty()) {
            break q;
        }
        assert!(Instant::now() < deadline, "no quality in the heartbeat");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(quality.len(), 1, "{quality:?}");
    assert_eq!(quality[0].user, USER);
    // 10 of the first 251 packets were skipped when the interval closed at 5 s.
    assert!(
        (0.035..=0.045).contains(&quality[0].uplink_loss),
        "{quality:?}"
    );
    assert!(quality[0].uplink_jitter_ms.is_some(), "{quality:?}");
}
