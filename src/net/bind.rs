//! Creating sockets with the options the data path needs (socket2).

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog of each TCP/TLS listener: a burst of call set-ups must not be refused.
const LISTEN_BACKLOG: i32 = 1024;
/// Socket buffers of a client-facing UDP listener. Every client of a worker sends into
/// this one socket, so the kernel's default (about 208 KiB, a few hundred small
/// datagrams counted at their in-kernel size) overflows under bursts long before the
/// worker is busy: the benchmark lost 22% of audio at 25 kpps with the default, as did
/// a bare forwarder. Bigger is not better either: a buffer that holds tens of
/// milliseconds of media turns an overload into a standing queue (bufferbloat) instead
/// of loss, and late audio is as useless as lost audio. 2 MiB holds about 3000 small
/// datagrams: over 10 ms at 250 kpps.
const LISTENER_BUFFER: usize = 2 << 20;
/// Relay sockets carry one allocation each (a peer or two): a video frame's burst.
const RELAY_BUFFER: usize = 512 << 10;

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
    set_buffers(&socket, LISTENER_BUFFER);
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}

/// Ask for `bytes` of receive and send buffer. `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` go past
/// the `net.core.rmem_max`/`wmem_max` caps when we have CAP_NET_ADMIN (a relay started
/// as root); otherwise the plain options get what the caps allow. Best effort: a
/// smaller buffer only means earlier drops under bursts.
fn set_buffers(socket: &Socket, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let forced =
        super::batch::set_int_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)
            .and_then(|()| {
                super::batch::set_int_option(socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, value)
            });
    if forced.is_err() {
        let _ = socket.set_recv_buffer_size(bytes);
        let _ = socket.set_send_buffer_size(bytes);
    }
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
    set_buffers(&socket, RELAY_BUFFER);
    socket.bind(&addr.into())?;
    Ok(mio::net::UdpSocket::from_std(socket.into()))
}
