//! RFC 6156 on the default relay configuration (relay sockets on the wildcards, no
//! `relay.external_ipv4`/`external_ipv6`): a client asking for a relayed address of the
//! family it did not reach us over is given this host's own address of that family,
//! and relays through it; a host with no such address answers 440.
//!
//! The relay runs in a network namespace the test creates, joined by a veth pair to a
//! second namespace that holds the peer: the relay's namespace has 2001:db8::1/64 and
//! 192.0.2.1/24, the peer's 2001:db8::2/64 and 192.0.2.2/24 (documentation ranges, only
//! ever inside these namespaces). The client talks to the relay on loopback inside the
//! relay's namespace. Needs root and iproute2; fails saying so without them.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
mod turn_udp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{TurnpikeConfig, TurnpikeProcess};
use turn_udp::{Client, Turn};
use turnpike::proto::channel_data;
use turnpike::proto::stun::attr;

const CHANNEL: u16 = 0x4001;
const WAIT: Duration = Duration::from_secs(2);

/// Runs a command and fails the test, with the command's words, if it does not succeed.
fn run(cmd: &[&str]) {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{} must be installed: {e}", cmd[0]));
    assert!(
        out.status.success(),
        "{} (these tests need root): {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace with its loopback up, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tp-v6-{tag}{n}-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> <args>`.
    fn ip(&self, args: &[&str]) {
        let mut cmd = vec!["ip", "-n", &self.0];
        cmd.extend_from_slice(args);
        run(&cmd);
    }

    /// Runs `f` on a thread inside this namespace (sockets and processes it makes stay
    /// in it).
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("the namespace's handle");
            // SAFETY: setns on a namespace fd we own; affects only this thread.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// The relay's namespace and the peer's, joined by a veth pair, each with one IPv6
/// and one IPv4 address (no duplicate address detection, so the addresses are usable,
/// not tentative, at once).
fn two_namespaces() -> (Netns, Netns) {
    let relay = Netns::new("relay");
    let peer = Netns::new("peer");
    relay.ip(&[
        "link", "add", "vrelay", "type", "veth", "peer", "name", "vpeer", "netns", &peer.0,
    ]);
    for (ns, dev, v6, v4) in [
        (&relay, "vrelay", "2001:db8::1/64", "192.0.2.1/24"),
        (&peer, "vpeer", "2001:db8::2/64", "192.0.2.2/24"),
    ] {
        ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]);
        ns.ip(&["addr", "add", v4, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    (relay, peer)
}

/// The default relay sockets (wildcards, nothing external), UDP on 127.0.0.1 and [::1],
/// peers in the documentation ranges allowed.
fn wildcard_relay(ns: &Netns) -> TurnpikeProcess {
    let config = TurnpikeConfig {
        users: vec![format!("{}:{}", turn_udp::USER, turn_udp::PASS)],
        realm: turn_udp::REALM.into(),
        relay_bind: ("0.0.0.0".into(), "::".into()),
        udp_ipv6: true,
        allow_peers: vec!["2001:db8::/32".into(), "192.0.2.0/24".into()],
        ..TurnpikeConfig::default()
    };
    ns.enter(move || TurnpikeProcess::start(config))
}

/// A UDP socket bound in `ns` (any port of `ip`), with a read timeout.
fn socket_in(ns: &Netns, ip: &str) -> UdpSocket {
    let addr = SocketAddr::new(ip.parse().unwrap(), 0);
    let sock = ns.enter(move || UdpSocket::bind(addr).unwrap());
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock
}

/// Allocate with REQUESTED-ADDRESS-FAMILY `family` (1 IPv4, 2 IPv6): the relayed
/// address, or the error code.
fn allocate(client: &mut Client, family: u8) -> Result<SocketAddr, u16> {
    client.try_allocate(|b| b.add(attr::REQUESTED_ADDRESS_FAMILY, &[family, 0, 0, 0]))
}

/// One datagram within the socket's read timeout (an interrupted wait is resumed).
fn recv_from(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match sock.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Binds a channel to `peer` and sends a datagram each way; asserts both arrive, the
/// peer's from the relayed address.
fn relays_both_ways(client: &mut Client, relayed: SocketAddr, peer: &UdpSocket) {
    let peer_addr = peer.local_addr().unwrap();
    client.channel_bind(CHANNEL, peer_addr);
    let mut frame = vec![0u8; 4 + 5];
    channel_data::write_header(&mut frame, CHANNEL, 5).unwrap();
    frame[4..].copy_from_slice(b"to-pe");
    client.sock.send_to(&frame, client.server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = recv_from(peer, &mut buf).expect("the peer gets the client's data");
    assert_eq!(&buf[..n], b"to-pe");
    assert_eq!(from, relayed, "the peer sees the relayed address");

    peer.send_to(b"to-client", relayed).unwrap();
    let (n, _) = recv_from(&client.sock, &mut buf).expect("the client gets the peer's data");
    assert_eq!(
        &buf[..4],
        &[0x40, 0x01, 0, 9],
        "ChannelData on the bound channel"
    );
    assert_eq!(&buf[4..n], b"to-client");
}

#[test]
fn an_ipv4_client_reaches_an_ipv6_only_peer_through_the_hosts_ipv6_address() {
    let (relay_ns, peer_ns) = two_namespaces();
    let relay = wildcard_relay(&relay_ns);
    let sock = socket_in(&relay_ns, "127.0.0.1");
    let mut client = Client::new(sock, SocketAddr::from(([127, 0, 0, 1], relay.port)));

    let relayed = allocate(&mut client, 0x02).expect("an IPv6 allocation");
    assert_eq!(relayed.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
    assert!((relay.relay_ports.0..=relay.relay_ports.1).contains(&relayed.port()));
    let peer = socket_in(&peer_ns, "2001:db8::2");
    relays_both_ways(&mut client, relayed, &peer);
    assert!(
        relay.log().contains("2001:db8::1"),
        "the chosen address is logged at start:\n{}",
        relay.log()
    );
}

#[test]
fn an_ipv6_client_reaches_an_ipv4_only_peer_through_the_hosts_ipv4_address() {
    let (relay_ns, peer_ns) = two_namespaces();
    let relay = wildcard_relay(&relay_ns);
    let sock = socket_in(&relay_ns, "::1");
    let server = SocketAddr::new("::1".parse().unwrap(), relay.port);
    let mut client = Client::new(sock, server);

    let relayed = allocate(&mut client, 0x01).expect("an IPv4 allocation");
    assert_eq!(relayed.ip(), "192.0.2.1".parse::<IpAddr>().unwrap());
    let peer = socket_in(&peer_ns, "192.0.2.2");
    relays_both_ways(&mut client, relayed, &peer);
}

#[test]
fn a_host_without_a_global_ipv6_address_answers_440_to_an_ipv4_client_asking_for_ipv6() {
    // Loopback (::1 and 127.0.0.1) and a veth pair with link-local IPv6 addresses
    // only: none of them can be advertised.
    let ns = Netns::new("nov6");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    for dev in ["va", "vb"] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    ns.ip(&["addr", "add", "fe80::1/64", "dev", "va", "nodad"]);
    let relay = wildcard_relay(&ns);
    let sock = socket_in(&ns, "127.0.0.1");
    let mut client = Client::new(sock, SocketAddr::from(([127, 0, 0, 1], relay.port)));

    assert_eq!(allocate(&mut client, 0x02), Err(440));
    // IPv4 still relays (the address the client reached).
    let relayed = allocate(&mut client, 0x01).expect("an IPv4 allocation");
    assert_eq!(relayed.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
    assert!(
        relay.log().contains("get 440"),
        "the missing family is logged at start:\n{}",
        relay.log()
    );
}
