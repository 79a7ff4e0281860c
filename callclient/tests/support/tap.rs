//! A UDP tap between TURN clients and the relay that records every datagram.
//!
//! Why a tap: the bytes that matter are the ones the relay forwards, and without tcpdump
//! (or root-only packet sockets) the simplest place to see them all is on the client side
//! of the relay: a client's TURN server URL names the tap, which relays each datagram
//! both ways between that client and Turnpike and keeps a copy. Client → relay carries
//! what the client sends through its allocation (ChannelData or Send indications);
//! relay → client carries what Turnpike forwarded from the peer (ChannelData or Data
//! indications). It sees exactly what Turnpike sees and sends, plus nothing else, and
//! needs no privileges. Turnpike sees the tap's upstream sockets as the clients; nothing
//! else about the call changes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// One datagram that crossed the tap.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// true: client → relay; false: relay → client.
    pub to_relay: bool,
    /// The client's address (as seen by the tap).
    pub client: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Tap {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Datagram>>>,
    task: JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tap {
    /// Listen on 127.0.0.1 and forward to `relay`.
    pub async fn start(relay: SocketAddr) -> Tap {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind the tap"));
        let addr = front.local_addr().expect("tap address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(run(front, relay, log.clone()));
        Tap { addr, log, task }
    }

    /// Everything recorded so far.
    pub fn captured(&self) -> Vec<Datagram> {
        self.log.lock().expect("tap log lock").clone()
    }
}

async fn run(front: Arc<UdpSocket>, relay: SocketAddr, log: Arc<Mutex<Vec<Datagram>>>) {
    // One upstream socket per client, so Turnpike sees one 5-tuple per client (as it
    // would without the tap) and its answers find their way back.
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((len, client)) = front.recv_from(&mut buf).await else {
            break;
        };
        let bytes = buf.get(..len).unwrap_or_default().to_vec();
        log.lock().expect("tap log lock").push(Datagram {
            to_relay: true,
            client,
            bytes: bytes.clone(),
        });
        let upstream = match upstreams.entry(client) {
            Entry::Occupied(known) => known.get().0.clone(),
            Entry::Vacant(new) => {
                let upstream =
                    Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream"));
                upstream.connect(relay).await.expect("connect upstream");
                let back = tokio::spawn(relay_to_client(
                    upstream.clone(),
                    front.clone(),
                    client,
                    log.clone(),
                ));
                new.insert((upstream.clone(), back));
                upstream
            }
        };
        let _ = upstream.send(&bytes).await;
    }
    for (_, (_, back)) in upstreams {
        back.abort();
    }
}

async fn relay_to_client(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    log: Arc<Mutex<Vec<Datagram>>>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok(len) = upstream.recv(&mut buf).await {
        let bytes = buf.get(..len).unwrap_or_default();
        log.lock().expect("tap log lock").push(Datagram {
            to_relay: false,
            client,
            bytes: bytes.to_vec(),
        });
        let _ = front.send_to(bytes, client).await;
    }
}
