"""A TURN client over QUIC that nobody at Turnpike wrote the QUIC of: aioquic's sans-IO
QuicConnection and H3Connection carry a CONNECT-UDP tunnel (RFC 9298); inside it this
script speaks plain TURN (RFC 8656) with TURN REST credentials.

Driven by tests/quic.rs. Prints one JSON object on stdout with what it observed; the
Rust test decides whether that is right. Every wait is bounded.

Modes:
  relay   Allocate, CreatePermission, Send/Data, ChannelBind, ChannelData both ways
          against a UDP echo peer; then migrate (datagrams leave from a new socket on
          127.0.0.2) and relay again; Refresh; then close the tunnel.
  refuse  Requests the relay must refuse: other targets, other methods and protocols.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time
import zlib

from aioquic.h3.connection import H3Connection, Setting
from aioquic.h3.events import DatagramReceived, DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated

MAGIC = 0x2112A442


class DatagramH3(H3Connection):
    """H3Connection announcing HTTP Datagrams (RFC 9297) without WebTransport."""

    def _get_local_settings(self):
        settings = super()._get_local_settings()
        settings[Setting.H3_DATAGRAM] = 1
        return settings


# --- STUN/TURN encoding (RFC 8489, RFC 8656) --------------------------------------------


def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_addr(addr, tid):
    ip, port = addr
    packed = socket.inet_aton(ip)
    xport = port ^ (MAGIC >> 16)
    xip = bytes(a ^ b for a, b in zip(packed, struct.pack("!I", MAGIC)))
    return struct.pack("!BBH", 0, 1, xport) + xip


def parse_xor_addr(value):
    family, xport = struct.unpack("!xBH", value[:4])
    port = xport ^ (MAGIC >> 16)
    if family == 1:
        ip = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", MAGIC)))
        return (socket.inet_ntoa(ip), port)
    raise ValueError("IPv6 not expected here")


def message(method, cls, tid, attrs, key=None):
    kind = (method & 0xF) | ((method & 0x70) << 1) | ((method & 0xF80) << 2)
    kind |= (cls & 1) << 4 | (cls & 2) << 7
    body = b"".join(attrs)
    if key is not None:
        # MESSAGE-INTEGRITY over the message with its length covering the attribute.
        header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + tid
        mac = hmac.new(key, header + body, hashlib.sha1).digest()
        body += attr(0x0008, mac)
    header = struct.pack("!HHI", kind, len(body) + 8, MAGIC) + tid
    crc = zlib.crc32(header + body) ^ 0x5354554E
    body += attr(0x8028, struct.pack("!I", crc))
    return struct.pack("!HHI", kind, len(body), MAGIC) + tid + body


def parse(msg):
    kind, length, magic = struct.unpack("!HHI", msg[:8])
    tid = msg[8:20]
    attrs = {}
    pos = 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", msg[pos : pos + 4])
        attrs.setdefault(t, msg[pos + 4 : pos + 4 + n])
        pos += 4 + n + (4 - n % 4) % 4
    cls = ((kind >> 4) & 1) | ((kind >> 7) & 2)
    return cls, tid, attrs


def error_code(attrs):
    value = attrs.get(0x0009)
    return None if value is None else (value[2] & 7) * 100 + value[3]


# --- the tunnel -------------------------------------------------------------------------


def varint(n):
    """QUIC variable-length integer (RFC 9000 §16)."""
    if n < 0x40:
        return bytes([n])
    if n < 0x4000:
        return struct.pack("!H", 0x4000 | n)
    if n < 0x40000000:
        return struct.pack("!I", 0x80000000 | n)
    return struct.pack("!Q", 0xC000000000000000 | n)


def read_varint(buf, pos):
    """(value, end position), or (None, 0) when `buf` ends first."""
    if pos >= len(buf):
        return None, 0
    length = 1 << (buf[pos] >> 6)
    if pos + length > len(buf):
        return None, 0
    value = buf[pos] & 0x3F
    for byte in buf[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, pos + length


class Tunnel:
    def __init__(self, server, authority, target_path, bind_ip="127.0.0.1", capsules=False):
        # With `capsules`, no HTTP Datagrams at all (neither the QUIC extension nor the
        # H3 setting): TURN travels in DATAGRAM capsules on the request stream.
        self.use_capsules = capsules
        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=["h3"],
            max_datagram_frame_size=None if capsules else 65536,
        )
        config.verify_mode = ssl.CERT_NONE
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic) if capsules else DatagramH3(self.quic)
        self.server = server
        self.sock = self.new_socket(bind_ip)
        self.quic.connect(server, now=time.time())
        self.responses = {}
        self.datagrams = []
        self.capsules = b""
        self.terminated = False
        self.authority = authority
        self.target_path = target_path
        self.flush()

    @staticmethod
    def new_socket(ip):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        return s

    def flush(self):
        for data, addr in self.quic.datagrams_to_send(now=time.time()):
            self.sock.sendto(data, addr)

    def pump(self, done, timeout):
        """Runs the connection until done() or timeout; returns done()."""
        deadline = time.time() + timeout
        while not done() and time.time() < deadline:
            timer = self.quic.get_timer()
            wait = deadline if timer is None else min(deadline, timer)
            ready, _, _ = select.select([self.sock], [], [], max(0.0, wait - time.time()))
            if ready:
                data, addr = self.sock.recvfrom(65536)
                self.quic.receive_datagram(data, addr, now=time.time())
            elif timer is not None and time.time() >= timer:
                self.quic.handle_timer(now=time.time())
            self.handle_events()
            self.flush()
        return done()

    def handle_events(self):
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = True
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived):
                    self.responses[h3_event.stream_id] = dict(h3_event.headers)
                elif isinstance(h3_event, DatagramReceived):
                    # Context ID 0: a UDP payload (RFC 9298 §5).
                    if h3_event.data[:1] == b"\0":
                        self.datagrams.append(h3_event.data[1:])
                elif isinstance(h3_event, DataReceived):
                    self.capsules += h3_event.data
            event = self.quic.next_event()

    def request(self, headers, end_stream=False):
        stream_id = self.quic.get_next_available_stream_id()
        self.h3.send_headers(stream_id, headers, end_stream=end_stream)
        self.flush()
        self.pump(lambda: stream_id in self.responses or self.terminated, 5)
        return stream_id, self.responses.get(stream_id)

    def connect_udp(self, path=None, method=b"CONNECT", protocol=b"connect-udp"):
        headers = [
            (b":method", method),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", (path or self.target_path).encode()),
        ]
        if protocol is not None:
            headers.insert(1, (b":protocol", protocol))
        if method == b"CONNECT":
            headers.append((b"capsule-protocol", b"?1"))
        return self.request(headers)

    def send(self, stream_id, msg):
        # Past what a QUIC datagram holds on a 1200-byte path: a capsule (RFC 9297 §3.5).
        if self.use_capsules or len(msg) > 1100:
            # RFC 9297 §3.5 DATAGRAM capsule: type 0, length, then context ID 0 + payload.
            value = b"\0" + msg
            self.h3.send_data(stream_id, b"\0" + varint(len(value)) + value, end_stream=False)
        else:
            self.h3.send_datagram(stream_id, b"\0" + msg)
        self.flush()

    def take_capsules(self):
        """Moves whole DATAGRAM capsules from the stream bytes into `datagrams`."""
        while self.capsules:
            kind, a = read_varint(self.capsules, 0)
            length, b = read_varint(self.capsules, a) if a else (None, 0)
            if not a or not b or len(self.capsules) < b + length:
                return
            value = self.capsules[b : b + length]
            self.capsules = self.capsules[b + length :]
            if kind == 0 and value[:1] == b"\0":
                self.datagrams.append(value[1:])

    def recv(self, timeout=3.0):
        def ready():
            self.take_capsules()
            return self.datagrams

        self.pump(ready, timeout)
        return self.datagrams.pop(0) if self.datagrams else None

    def migrate(self):
        """Datagrams leave from a new socket on another loopback address."""
        old = self.sock
        self.sock = self.new_socket("127.0.0.2")
        old.close()
        self.quic.change_connection_id()

    def close_stream(self, stream_id):
        self.quic.send_stream_data(stream_id, b"", end_stream=True)
        self.flush()


class Echo:
    """A UDP peer that echoes and remembers who sent to it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.sources = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                data, addr = self.sock.recvfrom(65536)
            except socket.timeout:
                continue
            self.sources.append(addr)
            self.sock.sendto(data, addr)


class Turn:
    def __init__(self, tunnel, stream_id, user, password):
        self.t, self.stream, self.user, self.password = tunnel, stream_id, user, password
        self.realm = self.nonce = None

    def key(self):
        realm = self.realm.decode()
        return hashlib.md5(f"{self.user}:{realm}:{self.password}".encode()).digest()

    def transact(self, method, attrs, signed=True):
        for _ in range(2):
            tid = os.urandom(12)
            extra = []
            if signed and self.nonce is not None:
                extra = [
                    attr(0x0006, self.user.encode()),
                    attr(0x0014, self.realm),
                    attr(0x0015, self.nonce),
                ]
            key = self.key() if signed and self.nonce is not None else None
            self.t.send(self.stream, message(method, 0, tid, attrs + extra, key))
            reply = self.t.recv()
            if reply is None:
                return None, {}
            cls, rtid, rattrs = parse(reply)
            self.last_error = error_code(rattrs)
            if cls == 3 and self.last_error in (401, 438) and signed:
                self.realm, self.nonce = rattrs[0x0014], rattrs[0x0015]
                continue
            return cls, rattrs
        return cls, rattrs


def relay(args):
    out = {}
    echo = Echo()
    peer = echo.sock.getsockname()
    tunnel = Tunnel(args.server, args.authority, args.path, capsules=args.capsules)
    stream, response = tunnel.connect_udp()
    out["status"] = response and response.get(b":status", b"").decode()
    if out["status"] != "200":
        print(json.dumps(out))
        return
    expiry = int(time.time()) + 3600
    user = f"{expiry}:quic-user"
    password = base64.b64encode(
        hmac.new(args.secret.encode(), user.encode(), hashlib.sha1).digest()
    ).decode()
    turn = Turn(tunnel, stream, user, password)
    cls, a = turn.transact(0x003, [attr(0x0019, b"\x11\0\0\0")])
    out["allocate"] = cls
    out["allocate_error"] = turn.last_error
    relayed = parse_xor_addr(a[0x0016]) if 0x0016 in a else None
    out["relayed"] = list(relayed) if relayed else None
    cls, a = turn.transact(0x008, [attr(0x0012, xor_addr(peer, None))])
    out["permission"] = cls

    def send_indication(data):
        tid = os.urandom(12)
        tunnel.send(stream, message(0x006, 1, tid, [attr(0x0012, xor_addr(peer, None)), attr(0x0013, data)]))
        reply = tunnel.recv()
        if reply is None:
            return None
        cls, _, ra = parse(reply)
        return ra.get(0x0013) if cls == 1 else None

    out["send_data"] = [send_indication(b"send-%d" % i) == b"send-%d" % i for i in range(5)]
    cls, a = turn.transact(0x009, [attr(0x000C, b"\x40\x00\0\0"), attr(0x0012, xor_addr(peer, None))])
    out["channel_bind"] = cls

    def channel_echo(data):
        tunnel.send(stream, struct.pack("!HH", 0x4000, len(data)) + data)
        reply = tunnel.recv()
        return reply is not None and reply[:4] == struct.pack("!HH", 0x4000, len(data)) and reply[4:4 + len(data)] == data

    out["channel_before"] = [channel_echo(b"chan-%d" % i) for i in range(10)]
    # A message larger than a QUIC datagram can carry goes as a capsule either way.
    out["large_echo"] = channel_echo(b"L" * 1400)
    out["peer_sources_before"] = sorted({f"{h}:{p}" for h, p in echo.sources})
    echo.sources.clear()
    tunnel.migrate()
    out["channel_after"] = [channel_echo(b"moved-%d" % i) for i in range(10)]
    out["peer_sources_after"] = sorted({f"{h}:{p}" for h, p in echo.sources})
    cls, a = turn.transact(0x004, [attr(0x000D, struct.pack("!I", 600))])
    out["refresh_after"] = cls
    out["client_address_after"] = "%s:%d" % tunnel.sock.getsockname()
    # Hold the tunnel open while the test reads the metrics, then close it.
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()
    tunnel.close_stream(stream)
    tunnel.pump(lambda: False, 0.5)
    echo.stop = True


def refuse(args):
    out = {}
    tunnel = Tunnel(args.server, args.authority, args.path)
    port = args.server[1]
    cases = {
        "other_peer": "/.well-known/masque/udp/127.0.0.1/9/",
        "private_target": "/.well-known/masque/udp/10.0.0.1/%d/" % port,
        "loopback_other_port": "/.well-known/masque/udp/127.0.0.1/%d/" % (port + 1),
        "name_target": "/.well-known/masque/udp/example.com/%d/" % port,
        "bad_path": "/somewhere/else",
    }
    for name, path in cases.items():
        _, response = tunnel.connect_udp(path=path)
        out[name] = response and {k.decode(): v.decode() for k, v in response.items()}
    _, response = tunnel.request(
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", args.authority.encode()), (b":path", b"/")],
        end_stream=True,
    )
    out["get"] = response and response.get(b":status", b"").decode()
    _, response = tunnel.connect_udp(method=b"POST", protocol=None)
    out["post"] = response and response.get(b":status", b"").decode()
    _, response = tunnel.connect_udp(protocol=b"websocket")
    out["websocket"] = response and response.get(b":status", b"").decode()
    # Datagrams on a stream that is no tunnel: dropped, and the connection lives on.
    tunnel.h3.send_datagram(400, b"\0garbage")
    tunnel.flush()
    stream, response = tunnel.connect_udp()
    out["good_after"] = response and response.get(b":status", b"").decode()
    out["terminated"] = tunnel.terminated
    print(json.dumps(out))


def flood(args):
    """Opens args.count QUIC connections that complete the handshake and then send
    nothing; reports how many got through, then holds them until stdin closes."""
    tunnels = []
    for _ in range(args.count):
        config = QuicConfiguration(is_client=True, alpn_protocols=["h3"])
        config.verify_mode = ssl.CERT_NONE
        quic = QuicConnection(configuration=config)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        quic.connect(args.server, now=time.time())
        tunnels.append((quic, sock))
    done = set()
    deadline = time.time() + 60
    while len(done) < len(tunnels) and time.time() < deadline:
        for i, (quic, sock) in enumerate(tunnels):
            for data, addr in quic.datagrams_to_send(now=time.time()):
                sock.sendto(data, addr)
        socks = {sock: i for i, (_, sock) in enumerate(tunnels)}
        ready, _, _ = select.select(list(socks), [], [], 0.05)
        for sock in ready:
            quic = tunnels[socks[sock]][0]
            data, addr = sock.recvfrom(65536)
            quic.receive_datagram(data, addr, now=time.time())
            event = quic.next_event()
            while event is not None:
                if type(event).__name__ == "HandshakeCompleted":
                    done.add(socks[sock])
                event = quic.next_event()
    sys.stdout.write(json.dumps({"connected": len(done)}) + "\n")
    sys.stdout.flush()
    sys.stdin.readline()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["relay", "refuse", "flood"])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--capsules", action="store_true")
    p.add_argument("--server", required=True)
    p.add_argument("--secret", default="")
    args = p.parse_args()
    host, port = args.server.rsplit(":", 1)
    args.server = (host, int(port))
    args.authority = args.server_text = f"{host}:{port}"
    args.path = f"/.well-known/masque/udp/{host}/{port}/"
    {"relay": relay, "refuse": refuse, "flood": flood}[args.mode](args)


if __name__ == "__main__":
    main()
