//! Creating sockets with the options the data path needs (socket2), and splitting the
//! relay port range between workers.

use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each TCP/TLS listener: a burst of call set-ups must not be refused.
const LISTEN_BACKLOG: i32 = 1024;

fn new_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        // Keep `[::]:p` and `0.0.0.0:p` independent, so both families can be configured
        // side by side on every system whatever its `bindv6only` default.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A client-facing UDP socket that every worker binds on the same address: the kernel
/// spreads clients over workers by 5-tuple hash, keeping each client on one worker.
pub(crate) fn udp_listener(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// A TCP listener (also used for TLS) shared by all workers through SO_REUSEPORT.
pub(crate) fn tcp_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let socket = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    // Restarting while old connections sit in TIME_WAIT must not fail the bind.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(mio::net::TcpListener::from_std(socket.into()))
}

/// A relay (peer-facing) socket: owned by one allocation, so no SO_REUSEPORT — a port
/// taken by anything else must fail the bind and let the core pick another.
pub(crate) fn relay_socket(addr: SocketAddr) -> io::Result<mio::net::UdpSocket> {
    let socket = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Splits `ports` into `workers` disjoint, non-empty, contiguous slices of (nearly) equal
/// size, in worker order.
pub(crate) fn split_ports(
    ports: &RangeInclusive<u16>,
    workers: usize,
) -> io::Result<Vec<RangeInclusive<u16>>> {
    let (lo, hi) = (u64::from(*ports.start()), u64::from(*ports.end()));
    let count = if hi >= lo { hi - lo + 1 } else { 0 };
    let n = workers as u64;
    if n == 0 || count < n {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("relay port range {lo}-{hi} has {count} ports, fewer than {workers} workers"),
        ));
    }
    (0..n)
        .map(|i| {
            let first = lo + i * count / n;
            let last = lo + (i + 1) * count / n - 1;
            // Both lie within lo..=hi, which came from u16 values.
            let narrow =
                |p: u64| u16::try_from(p).map_err(|_| io::Error::other("relay port out of range"));
            Ok(narrow(first)?..=narrow(last)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_range_without_overlap() {
        let slices = split_ports(&(49152..=65535), 3).unwrap();
        assert_eq!(slices.len(), 3);
        assert_eq!(*slices[0].start(), 49152);
        assert_eq!(*slices[2].end(), 65535);
        for pair in slices.windows(2) {
            assert_eq!(*pair[0].end() + 1, *pair[1].start());
        }
        let total: usize = slices.iter().map(|s| s.clone().count()).sum();
        assert_eq!(total, 65535 - 49152 + 1);
    }

    #[test]
    fn every_worker_gets_a_port() {
        let slices = split_ports(&(1000..=1002), 3).unwrap();
        assert_eq!(slices, vec![1000..=1000, 1001..=1001, 1002..=1002]);
        assert!(split_ports(&(1000..=1001), 3).is_err());
        assert!(split_ports(&(0..=u16::MAX), 4).is_ok());
    }
}
