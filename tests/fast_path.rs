//! The in-kernel ChannelData fast path (src/fastpath/), loaded for real.
//!
//! Each test runs in a network namespace of its own (a thread that `unshare`s one: the
//! namespace is per thread, and the relay's worker threads inherit it), with the
//! program attached to that namespace's loopback. So tests never touch the host's
//! interfaces or each other. They need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for
//! the namespace) and a build that found clang, as CI has: without them they fail,
//! saying which is missing.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
mod turn_udp;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turn_udp::{Client, Turn};
use turnpike::fastpath::{FastPath, FastPathCounters};
use turnpike::net::{start, NetConfig};
use turnpike::proto::bandwidth::{Bandwidth, BandwidthCaps};
use turnpike::proto::channel_data;
use turnpike::proto::quota::Quotas;
use turnpike::proto::stun::attr;
use turnpike::proto::stun::{method, Class, MessageBuilder, TransactionId};
use turnpike::proto::{ChannelNumber, ClientId, FastPathUpdate, FastRoute, SharedPool, Transport};

const QUIET: Duration = Duration::from_millis(300);

/// Runs `body` on a thread inside a fresh network namespace whose loopback is up.
fn in_netns(body: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread's namespaces.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) failed ({}): these tests need root",
            std::io::Error::last_os_error()
        );
        // A child forked from this thread starts in its namespace.
        let status = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("`ip` (iproute2) must be installed");
        assert!(status.success(), "ip link set lo up failed");
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command (from the calling thread, so in its network namespace) and fails
/// the test, with the command's words, if it does not succeed.
fn run(cmd: &[&str]) {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{} must be installed: {e}", cmd[0]));
    assert!(
        out.status.success(),
        "{}: {}",
        cmd.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A named network namespace (`ip netns add`), deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new(tag: &str) -> NamedNetns {
        let name = format!("tp-fp-{tag}-{}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        NamedNetns(name)
    }

    /// Runs `f` on a thread inside this namespace (sockets it makes stay in it).
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

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn load() -> Arc<FastPath> {
    load_on("lo")
}

fn load_on(interface: &str) -> Arc<FastPath> {
    match FastPath::load(&[interface.to_string()]) {
        Ok(f) => Arc::new(f),
        Err(e) => panic!("the fast path must load here (CI installs clang and runs as root): {e}"),
    }
}

fn udp() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(QUIET)).expect("timeout");
    s
}

fn recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, from)| (buf[..n].to_vec(), from))
}

fn framed(channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4 + payload.len()];
    channel_data::write_header(&mut out, channel, payload.len()).expect("header");
    out[4..].copy_from_slice(payload);
    out
}

/// The program alone, with routes installed by hand and sockets standing in for the
/// relay: no relay process runs, so whatever reaches the peer was forwarded by the
/// kernel, and what reaches the "listener" socket is what the program passed up.
#[test]
fn the_program_forwards_installed_routes_and_passes_everything_else_up() {
    in_netns(|| {
        let fast = load();
        let (client, listener, relay, peer) = (udp(), udp(), udp(), udp());
        let addr = |s: &UdpSocket| s.local_addr().expect("addr");
        let id = ClientId {
            transport: Transport::Udp,
            remote: addr(&client),
            local: addr(&listener),
        };
        let mut routes = fast.routes();
        let route = |expires| FastRoute {
            channel: ChannelNumber(0x4001),
            peer: addr(&peer),
            relay: addr(&relay),
            expires,
        };
        routes.apply(&FastPathUpdate {
            client: id,
            routes: vec![route(Instant::now() + Duration::from_secs(60))],
        });
        assert_eq!(routes.len(), 1);

        // Client → peer: the payload arrives from the relayed address, unframed.
        let payload: Vec<u8> = (0..172u8).collect();
        for _ in 0..50 {
            client
                .send_to(&framed(0x4001, &payload), addr(&listener))
                .unwrap();
        }
        for _ in 0..50 {
            assert_eq!(recv(&peer), Some((payload.clone(), addr(&relay))));
        }
        // Peer → client: framed as ChannelData, from the listener address (video-sized,
        // in lock-step so the client's receive buffer never overflows).
        let back = vec![0xC3u8; 1200];
        for _ in 0..50 {
            peer.send_to(&back, addr(&relay)).unwrap();
            assert_eq!(
                recv(&client),
                Some((framed(0x4001, &back), addr(&listener)))
            );
        }
        assert_eq!(
            fast.counters(),
            FastPathCounters {
                client_to_peer_packets: 50,
                client_to_peer_bytes: 50 * 172,
                peer_to_client_packets: 50,
                peer_to_client_bytes: 50 * 1200,
                expired: 0,
            }
        );
        assert_eq!(recv(&listener), None, "nothing went up");
        assert_eq!(recv(&relay), None, "nothing went up");

        // Shapes the program leaves to user space arrive untouched: another channel
        // number, padding after the payload (legal, rare on UDP), a STUN message,
        // and a different client port.
        let other_channel = framed(0x4002, &payload);
        let mut padded = framed(0x4001, &payload[..3]);
        padded.push(0);
        let stun = [
            0u8, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        for datagram in [&other_channel[..], &padded[..], &stun[..]] {
            client.send_to(datagram, addr(&listener)).unwrap();
            assert_eq!(recv(&listener), Some((datagram.to_vec(), addr(&client))));
        }
        let stranger = udp();
        stranger
            .send_to(&framed(0x4001, &payload), addr(&listener))
            .unwrap();
        assert_eq!(
            recv(&listener),
            Some((framed(0x4001, &payload), addr(&stranger)))
        );
        // A peer port without a route: up to the relay socket.
        let other_peer = udp();
        other_peer.send_to(&back, addr(&relay)).unwrap();
        assert_eq!(recv(&relay), Some((back.clone(), addr(&other_peer))));
        assert_eq!(recv(&peer), None);
        assert_eq!(fast.counters().client_to_peer_packets, 50);

        // Past its expiry a route forwards nothing: the packets go up, counted.
        routes.apply(&FastPathUpdate {
            client: id,
            routes: vec![route(Instant::now() - Duration::from_millis(1))],
        });
        client
            .send_to(&framed(0x4001, &payload), addr(&listener))
            .unwrap();
        assert_eq!(
            recv(&listener),
            Some((framed(0x4001, &payload), addr(&client)))
        );
        peer.send_to(&back, addr(&relay)).unwrap();
        assert_eq!(recv(&relay), Some((back.clone(), addr(&peer))));
        assert_eq!(fast.counters().expired, 2);

        // An update without routes removes them: packets go up, and are not counted
        // as expired (there is no entry left to match).
        routes.apply(&FastPathUpdate {
            client: id,
            routes: vec![],
        });
        assert!(routes.is_empty());
        client
            .send_to(&framed(0x4001, &payload), addr(&listener))
            .unwrap();
        assert!(recv(&listener).is_some());
        assert_eq!(fast.counters().expired, 2);
        assert_eq!(fast.counters().client_to_peer_packets, 50);
    });
}

fn relay_config(fast_path: Arc<FastPath>) -> NetConfig {
    relay_config_on(fast_path, Ipv4Addr::LOCALHOST, "127.0.0.1/32")
}

/// Two workers on `ip` with the fast path.
fn relay_config_on(fast_path: Arc<FastPath>, ip: Ipv4Addr, peers: &str) -> NetConfig {
    NetConfig {
        fast_path: Some(fast_path),
        ..turn_udp::relay_config(ip.into(), peers, 2)
    }
}

/// The relay with the fast path: once a channel is bound the kernel carries its
/// packets both ways (the workers never see them), and when the allocation is deleted
/// the kernel stops at once — the peer can no longer reach the client.
#[test]
fn the_relay_hands_bound_channels_to_the_kernel_and_takes_them_back() {
    let prometheus = turnpike::metrics::install_recorder();
    in_netns(move || {
        let fast = load();
        let relay = start(relay_config(fast.clone())).expect("relay starts");
        let server = relay.local_addrs()[0].1;
        let mut client = Client::new(udp(), server);
        let peer = udp();
        let peer_addr = peer.local_addr().unwrap();
        let relayed = client.allocate();

        // Before ChannelBind: a permission and a Send indication, in user space.
        client.expect_success(method::CREATE_PERMISSION, |b| {
            b.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
        });
        let mut send = Vec::new();
        let tid = TransactionId([0x55; 12]);
        let mut b = MessageBuilder::new(&mut send, Class::Indication, method::SEND, tid);
        b.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr);
        b.add(attr::DATA, b"by indication");
        client.sock.send_to(&send, server).unwrap();
        assert_eq!(recv(&peer), Some((b"by indication".to_vec(), relayed)));
        assert_eq!(fast.counters(), FastPathCounters::default());

        client.channel_bind(0x4007, peer_addr);
        // The worker installs the routes right after answering.
        let payload = [0x5Au8; 160];
        for i in 0..200u32 {
            let mut p = payload;
            p[..4].copy_from_slice(&i.to_be_bytes());
            client.sock.send_to(&framed(0x4007, &p), server).unwrap();
            let (got, from) = recv(&peer).expect("relayed to the peer");
            assert_eq!((&got[..], from), (&p[..], relayed));
            peer.send_to(&p, relayed).unwrap();
            let (got, from) = recv(&client.sock).expect("relayed to the client");
            assert_eq!((got, from), (framed(0x4007, &p), server));
        }
        let counters = fast.counters();
        assert_eq!(
            (
                counters.client_to_peer_packets,
                counters.peer_to_client_packets
            ),
            (200, 200),
            "every ChannelData went through the kernel"
        );
        // Worker 0 publishes the kernel's counters once a second. Other tests of this
        // binary may run relays too (the registry is the process's), so at least.
        let metric = |text: &str, direction: &str| -> f64 {
            let prefix = format!("turnpike_fastpath_packets_total{{direction=\"{direction}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = prometheus.render();
            if metric(&text, "to_peer") >= 200.0 && metric(&text, "to_client") >= 200.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the kernel's counters never reached /metrics:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        // Refresh with lifetime 0 deletes the allocation, and with it the routes.
        client.expect_success(method::REFRESH, |b| b.add_u32(attr::LIFETIME, 0));
        peer.send_to(&payload, relayed).unwrap();
        assert_eq!(
            recv(&client.sock),
            None,
            "the peer no longer reaches the client"
        );
        client
            .sock
            .send_to(&framed(0x4007, &payload), server)
            .unwrap();
        assert_eq!(recv(&peer), None, "the client no longer reaches the peer");
        assert_eq!(
            fast.counters(),
            counters,
            "the kernel forwarded nothing more"
        );
        relay.shutdown();
    });
}

/// With a bandwidth cap set, bound channels stay in user space, where the cap is
/// charged: the kernel forwards nothing, and a burst over the cap is cut to it.
#[test]
fn capped_allocations_stay_off_the_kernel_and_their_cap_holds() {
    in_netns(move || {
        let fast = load();
        let mut config = relay_config(fast.clone());
        // 800 kbit/s: 100 kB/s, with a quarter second's burst (25 kB).
        let caps = BandwidthCaps {
            per_allocation: 800_000,
            ..BandwidthCaps::default()
        };
        config.shared = Arc::new(
            SharedPool::new(27_100..=27_199, Quotas::new(0, 0))
                .with_bandwidth(Bandwidth::new(caps, Instant::now())),
        );
        let relay = start(config).expect("relay starts");
        let server = relay.local_addrs()[0].1;
        let mut client = Client::new(udp(), server);
        let peer = udp();
        let peer_addr = peer.local_addr().unwrap();
        let relayed = client.allocate();
        client.channel_bind(0x4007, peer_addr);
        // In lock step, well under the cap: every packet arrives, through the worker.
        let payload = [0x5Au8; 100];
        for _ in 0..50 {
            client
                .sock
                .send_to(&framed(0x4007, &payload), server)
                .unwrap();
            let (got, from) = recv(&peer).expect("relayed to the peer");
            assert_eq!((&got[..], from), (&payload[..], relayed));
            peer.send_to(&payload, relayed).unwrap();
            let (got, _) = recv(&client.sock).expect("relayed to the client");
            assert_eq!(got, framed(0x4007, &payload));
        }
        // 100 kB at once: about the burst allowance passes, not the rest.
        let big = [0xA5u8; 1000];
        for _ in 0..100 {
            client.sock.send_to(&framed(0x4007, &big), server).unwrap();
        }
        let mut passed = 0;
        while recv(&peer).is_some() {
            passed += 1;
        }
        assert!(
            (20..=40).contains(&passed),
            "{passed} of 100 passed the cap"
        );
        assert_eq!(
            fast.counters(),
            FastPathCounters::default(),
            "the kernel forwarded nothing"
        );
        relay.shutdown();
    });
}

/// From the calling thread's namespace (the relay's, 192.0.2.1/24) a veth pair to the
/// named namespace `ns` (192.0.2.2 and 192.0.2.3 on its end), checksum offloads off on
/// both ends so that every checksum is computed and verified in software. Returns the
/// relay's and the outer interface names.
fn veth_to(ns: &str) -> (&'static str, &'static str) {
    let (relay_if, outer_if) = ("tpfp-r", "tpfp-o");
    run(&[
        "ip", "link", "add", relay_if, "type", "veth", "peer", "name", outer_if, "netns", ns,
    ]);
    run(&["ip", "addr", "add", "192.0.2.1/24", "dev", relay_if]);
    run(&["ip", "link", "set", relay_if, "up"]);
    run(&["ethtool", "-K", relay_if, "rx", "off", "tx", "off"]);
    for cmd in [
        vec!["addr", "add", "192.0.2.2/24", "dev", outer_if],
        vec!["addr", "add", "192.0.2.3/24", "dev", outer_if],
        vec!["link", "set", outer_if, "up"],
        vec!["link", "set", "lo", "up"],
    ] {
        let mut full = vec!["ip", "-n", ns];
        full.extend(cmd);
        run(&full);
    }
    run(&[
        "ip", "netns", "exec", ns, "ethtool", "-K", outer_if, "rx", "off", "tx", "off",
    ]);
    (relay_if, outer_if)
}

/// A route whose client is on the relay's own host accepts that client's packets only
/// from loopback: the same source address arriving from outside is spoofed (the stack
/// drops it as a martian, and the program must not forward it first).
#[test]
fn a_local_clients_route_ignores_its_address_spoofed_from_outside() {
    let outside = Arc::new(NamedNetns::new("spoof"));
    let ns = outside.0.clone();
    let outside2 = outside.clone();
    in_netns(move || {
        let (relay_if, _) = veth_to(&ns);
        run(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"]);
        // The program on both: local traffic arrives on lo, the spoofer's on the veth.
        let fast = match FastPath::load(&["lo".to_string(), relay_if.to_string()]) {
            Ok(f) => Arc::new(f),
            Err(e) => panic!("the fast path must load: {e}"),
        };
        let bind_here = |port: u16| {
            let s = UdpSocket::bind(("192.0.2.1", port)).expect("bind");
            s.set_read_timeout(Some(QUIET)).expect("timeout");
            s
        };
        let (client, listener, relay) = (bind_here(0), bind_here(0), bind_here(0));
        let client_addr = client.local_addr().unwrap();
        let peer = outside2.enter(|| {
            let s = UdpSocket::bind(("192.0.2.3", 0)).expect("bind outside");
            s.set_read_timeout(Some(QUIET)).expect("timeout");
            s
        });
        // Resolve the peer's neighbour entry, as any earlier traffic would have.
        relay.send_to(b"hello", peer.local_addr().unwrap()).unwrap();
        assert!(recv(&peer).is_some());
        let mut routes = fast.routes();
        routes.apply(&FastPathUpdate {
            client: ClientId {
                transport: Transport::Udp,
                remote: client_addr,
                local: listener.local_addr().unwrap(),
            },
            routes: vec![FastRoute {
                channel: ChannelNumber(0x4003),
                peer: peer.local_addr().unwrap(),
                relay: relay.local_addr().unwrap(),
                expires: Instant::now() + Duration::from_secs(60),
            }],
        });
        let payload = [0x77u8; 100];
        let datagram = framed(0x4003, &payload);
        // The genuine local client: forwarded, out of the veth to the peer.
        client
            .send_to(&datagram, listener.local_addr().unwrap())
            .unwrap();
        assert_eq!(
            recv(&peer),
            Some((payload.to_vec(), relay.local_addr().unwrap()))
        );
        assert_eq!(fast.counters().client_to_peer_packets, 1);
        // A spoofer outside with the client's address and port: not forwarded.
        let target = listener.local_addr().unwrap();
        outside2.enter(move || {
            // IP_TRANSPARENT lets a socket bind and send from an address not its own.
            let spoofer = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )
            .expect("socket");
            spoofer
                .set_ip_transparent(true)
                .expect("IP_TRANSPARENT (needs root)");
            spoofer
                .bind(&client_addr.into())
                .expect("bind the spoofed address");
            spoofer
                .send_to(&datagram, &target.into())
                .expect("send spoofed");
        });
        assert_eq!(recv(&peer), None, "the spoofed packet reached the peer");
        assert_eq!(fast.counters().client_to_peer_packets, 1);
        drop(routes);
    });
}

/// Off-host destinations: the relay in one namespace, client and peer in another,
/// joined by a veth pair. The program looks up the route (forwarding enabled), writes
/// the Ethernet addresses and sends the packet out of the device, moving the payload
/// rather than the headers and updating the UDP checksum. Receive checksum offload is
/// off on both ends, so the receiving stack verifies every checksum in software and
/// drops a wrong one: that the client and the peer get their packets proves them valid,
/// first for fully checksummed senders, then for senders that leave it to the device.
#[test]
fn off_host_routes_leave_through_the_device_with_valid_checksums() {
    let outside = Arc::new(NamedNetns::new("out"));
    let ns = outside.0.clone();
    let outside2 = outside.clone();
    in_netns(move || {
        let (relay_if, outer_if) = veth_to(&ns);
        let fast = load_on(relay_if);
        let relay_ip = Ipv4Addr::new(192, 0, 2, 1);
        let relay =
            start(relay_config_on(fast.clone(), relay_ip, "192.0.2.0/24")).expect("relay starts");
        let server = relay.local_addrs()[0].1;
        let bind = |ip: &'static str| {
            move || {
                let s = UdpSocket::bind((ip, 0)).expect("bind outside");
                s.set_read_timeout(Some(QUIET)).expect("timeout");
                s
            }
        };
        let client_sock = outside2.enter(bind("192.0.2.2"));
        let peer = outside2.enter(bind("192.0.2.3"));
        let peer_addr = peer.local_addr().unwrap();
        let mut client = Client::new(client_sock, server);
        let relayed = client.allocate();
        client.channel_bind(0x4009, peer_addr);

        // Without forwarding the kernel's route lookup refuses: the packets take the
        // socket path, and still arrive.
        let roundtrip = |client: &Client, size: usize, i: u32| {
            let mut p = vec![0x3Cu8; size];
            p[..4].copy_from_slice(&i.to_be_bytes());
            client.sock.send_to(&framed(0x4009, &p), server).unwrap();
            assert_eq!(recv(&peer), Some((p.clone(), relayed)), "to the peer, #{i}");
            peer.send_to(&p, relayed).unwrap();
            assert_eq!(
                recv(&client.sock),
                Some((framed(0x4009, &p), server)),
                "to the client, #{i}"
            );
        };
        for i in 0..10 {
            roundtrip(&client, 160, i);
        }
        assert_eq!(fast.counters(), FastPathCounters::default());

        run(&["sysctl", "-q", "-w", "net.ipv4.conf.all.forwarding=1"]);
        // Audio-sized, odd-sized (the payload moves in pieces) and video-sized.
        for (i, size) in [160usize, 5, 333, 1200]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            roundtrip(&client, size, i as u32);
        }
        let counters = fast.counters();
        assert_eq!(
            (
                counters.client_to_peer_packets,
                counters.peer_to_client_packets
            ),
            (40, 40),
            "with forwarding on, every packet went through the kernel"
        );

        // Senders that leave the checksum to the device (CHECKSUM_PARTIAL, as every
        // local or container sender does): the relay's device has no offload, so the
        // kernel completes the checksum in software on the way out, from the offset
        // the sender recorded — right only if the UDP header has not moved.
        run(&[
            "ip", "netns", "exec", &ns, "ethtool", "-K", outer_if, "tx", "on",
        ]);
        for (i, size) in [160usize, 5, 333, 1200]
            .into_iter()
            .cycle()
            .take(40)
            .enumerate()
        {
            roundtrip(&client, size, 100 + i as u32);
        }
        let counters = fast.counters();
        assert_eq!(
            (
                counters.client_to_peer_packets,
                counters.peer_to_client_packets
            ),
            (80, 80)
        );
        relay.shutdown();
    });
}

/// A relay process with the fast path on, killed with SIGKILL (no cleanup runs) while
/// the kernel carries a channel: neither the dead process's program nor its routes
/// forward anything afterwards, nor once a new relay runs on the same ports.
#[test]
fn after_kill_9_and_a_restart_no_stale_kernel_route_forwards() {
    in_netns(|| {
        let config = support::TurnpikeConfig {
            users: vec![format!("{}:{}", turn_udp::USER, turn_udp::PASS)],
            realm: turn_udp::REALM.into(),
            server_extra: "fast_path_interfaces = [\"lo\"]\n".into(),
            ..support::TurnpikeConfig::default()
        };
        let server = support::TurnpikeProcess::start(config.clone());
        let listener = server.udp_addr();
        let mut client = Client::new(udp(), listener);
        let peer = udp();
        let peer_addr = peer.local_addr().unwrap();
        let relayed = client.allocate();
        client.channel_bind(0x4009, peer_addr);
        for i in 0..20u8 {
            client
                .sock
                .send_to(&framed(0x4009, &[i; 40]), listener)
                .unwrap();
            assert_eq!(recv(&peer), Some((vec![i; 40], relayed)), "relayed");
        }
        server.wait_for_metrics("the kernel carrying the channel", |m| {
            m.sum(
                "turnpike_fastpath_packets_total",
                &[("direction", "to_peer")],
            ) >= 1.0
        });

        let mut server = server;
        server.signal(libc::SIGKILL);
        server
            .wait_exit(Duration::from_secs(5))
            .expect("SIGKILL ends the relay");
        let nothing_reaches_the_peer = |when: &str| {
            for i in 0..20u8 {
                client
                    .sock
                    .send_to(&framed(0x4009, &[i; 40]), listener)
                    .unwrap();
            }
            peer.send_to(b"to the client", relayed).unwrap();
            assert_eq!(
                recv(&peer),
                None,
                "{when}: the old channel forwards nothing"
            );
            let mut buf = [0u8; 64];
            let to_client = client.sock.recv_from(&mut buf);
            assert!(
                to_client.is_err(),
                "{when}: nothing from the peer reaches the old client: {to_client:?}"
            );
        };
        nothing_reaches_the_peer("after the kill");

        let server = server.restart(&config);
        nothing_reaches_the_peer("after the restart");
        // The new relay does carry a channel set up anew, so the silence above is the
        // old routes being gone, not a broken path.
        let mut again = Client::new(udp(), listener);
        let relayed = again.allocate();
        again.channel_bind(0x4009, peer_addr);
        again
            .sock
            .send_to(&framed(0x4009, b"new"), listener)
            .unwrap();
        assert_eq!(recv(&peer), Some((b"new".to_vec(), relayed)));
        drop(server);
    });
}
