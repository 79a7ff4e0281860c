//! Faults against the real `turnpike serve` on loopback: the relay port range running
//! out, and a worker thread panicking.

#![allow(clippy::unwrap_used)] // a test's unwrap is its assertion

mod support;
mod turn_udp;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::{TurnpikeConfig, TurnpikeProcess};
use turn_udp::{Client, Turn};

/// The relay's static user, as `turn_udp`'s client signs in.
fn config() -> TurnpikeConfig {
    TurnpikeConfig {
        users: vec![format!("{}:{}", turn_udp::USER, turn_udp::PASS)],
        realm: turn_udp::REALM.into(),
        ..TurnpikeConfig::default()
    }
}

fn client(server: &TurnpikeProcess) -> Client {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    Client::new(sock, SocketAddr::from(([127, 0, 0, 1], server.port)))
}

#[test]
fn an_exhausted_relay_port_range_gets_508_and_recovers_when_allocations_end() {
    const PORTS: u16 = 3;
    let server = TurnpikeProcess::start(TurnpikeConfig {
        relay_port_count: Some(PORTS),
        // Allocations nobody refreshes end after 3 s.
        relay_extra: "default_lifetime_secs = 3\n".into(),
        ..config()
    });
    let range = server.relay_ports.0..=server.relay_ports.1;

    // Every port taken: the next Allocate is refused with 508 Insufficient Capacity.
    let mut holders: Vec<Client> = (0..PORTS).map(|_| client(&server)).collect();
    let mut ports = HashSet::new();
    for c in &mut holders {
        let relayed = c.try_allocate(|_| {}).expect("a port is free");
        assert!(range.contains(&relayed.port()));
        ports.insert(relayed.port());
    }
    assert_eq!(
        ports.len(),
        usize::from(PORTS),
        "each allocation its own port"
    );
    let mut late = client(&server);
    assert_eq!(late.try_allocate(|_| {}), Err(508));
    let mut other = client(&server);
    assert_eq!(other.try_allocate(|_| {}), Err(508), "for every client");

    // One allocation deleted: its port serves the next Allocate at once.
    holders[0].delete_allocation();
    let relayed = late.try_allocate(|_| {}).expect("the freed port");
    assert!(range.contains(&relayed.port()));
    assert_eq!(
        other.try_allocate(|_| {}),
        Err(508),
        "only one port came back"
    );

    // Nobody refreshes: every allocation expires and the whole range comes back.
    // Four made (three, then one on the freed port), one deleted, three to expire.
    server.wait_for_metrics("every allocation ended", |m| {
        m.sum("turnpike_allocations_deleted_total", &[]) == 4.0
    });
    let mut fresh: Vec<Client> = (0..PORTS).map(|_| client(&server)).collect();
    let mut again = HashSet::new();
    for c in &mut fresh {
        again.insert(
            c.try_allocate(|_| {})
                .expect("the range is free again")
                .port(),
        );
    }
    assert_eq!(again, ports, "the same ports, all of them");
    assert_eq!(client(&server).try_allocate(|_| {}), Err(508));
    server.wait_for_metrics("the range's allocations", |m| {
        m.sum("turnpike_allocations", &[]) == f64::from(PORTS)
    });
    assert!(
        server.metrics().requests("allocate", "508") >= 4.0,
        "the 508s are counted"
    );
}

#[test]
fn a_worker_panic_logs_the_panic_and_exits_non_zero_promptly() {
    const TRIGGER: &str = "turnpike-test-panic";
    let mut server = TurnpikeProcess::start(TurnpikeConfig {
        env: vec![("TURNPIKE_TEST_PANIC_ON".into(), TRIGGER.into())],
        ..config()
    });
    // Serving before the fault.
    let mut c = client(&server);
    c.try_allocate(|_| {}).expect("the relay serves");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = Instant::now();
    sock.send_to(TRIGGER.as_bytes(), server.udp_addr()).unwrap();
    let status = server
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after the panic:\n{}", server.log()));
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "exited in {:?}",
        sent.elapsed()
    );
    assert_eq!(
        status.code(),
        Some(1),
        "a failure exit, not a signal or success: {status:?}\n{}",
        server.log()
    );
    let log = server.log();
    let panic_line = log
        .lines()
        .find(|l| l.contains("panic: TURNPIKE_TEST_PANIC_ON"))
        .unwrap_or_else(|| panic!("the panic is logged:\n{log}"));
    assert!(panic_line.contains("ERROR"), "{panic_line}");
    assert!(panic_line.contains("turnpike-worker-"), "{panic_line}");
    assert!(
        log.contains("panicked: exiting"),
        "the exit says why:\n{log}"
    );
}
