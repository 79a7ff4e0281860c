//! Creating sockets with the options the data path needs (socket2), and splitting the
//! (The relay port range is shared: see `proto::ports::RelayPorts`.)

use std::io;
use std::net::SocketAddr;

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
