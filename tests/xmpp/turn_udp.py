"""A small blocking TURN client over UDP (RFC 8656) for the XMPP call helper: Allocate with
the long-term mechanism (the 401 challenge, then USERNAME/REALM/NONCE and
MESSAGE-INTEGRITY, RFC 8489 §9.2), CreatePermission, ChannelBind, ChannelData, and a
Refresh with lifetime 0 to free the allocation. IPv4 only; each call is bounded.
"""

import hashlib
import hmac
import os
import socket
import struct
import time
import zlib

MAGIC = 0x2112A442
ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND = 0x003, 0x004, 0x008, 0x009
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE = 0x0006, 0x0008, 0x0009
CHANNEL_NUMBER, LIFETIME, XOR_PEER_ADDRESS = 0x000C, 0x000D, 0x0012
REALM, NONCE, XOR_RELAYED_ADDRESS = 0x0014, 0x0015, 0x0016
REQUESTED_TRANSPORT, XOR_MAPPED_ADDRESS, FINGERPRINT = 0x0019, 0x0020, 0x8028


class TurnError(Exception):
    def __init__(self, what, code):
        super().__init__(f"{what}: error {code}")
        self.code = code


def attr(kind, value):
    pad = (4 - len(value) % 4) % 4
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * pad


def xor_addr(addr):
    ip, port = addr
    xip = bytes(a ^ b for a, b in zip(socket.inet_aton(ip), struct.pack("!I", MAGIC)))
    return struct.pack("!BBH", 0, 1, port ^ (MAGIC >> 16)) + xip


def parse_xor_addr(value):
    family, xport = struct.unpack("!xBH", value[:4])
    if family != 1:
        raise ValueError("IPv4 only")
    ip = bytes(a ^ b for a, b in zip(value[4:8], struct.pack("!I", MAGIC)))
    return (socket.inet_ntoa(ip), xport ^ (MAGIC >> 16))


def message(method, tid, attrs, key=None):
    """A request (class 0) with MESSAGE-INTEGRITY when `key` is given, and FINGERPRINT."""
    kind = (method & 0xF) | ((method & 0x70) << 1) | ((method & 0xF80) << 2)
    body = b"".join(attrs)
    if key is not None:
        header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + tid
        body += attr(MESSAGE_INTEGRITY, hmac.new(key, header + body, hashlib.sha1).digest())
    header = struct.pack("!HHI", kind, len(body) + 8, MAGIC) + tid
    body += attr(FINGERPRINT, struct.pack("!I", zlib.crc32(header + body) ^ 0x5354554E))
    return struct.pack("!HHI", kind, len(body), MAGIC) + tid + body


def parse(msg):
    """(class, transaction id, {attribute type: first value})."""
    kind, length, _magic = struct.unpack("!HHI", msg[:8])
    attrs, pos = {}, 20
    while pos + 4 <= 20 + length:
        t, n = struct.unpack("!HH", msg[pos : pos + 4])
        attrs.setdefault(t, msg[pos + 4 : pos + 4 + n])
        pos += 4 + n + (4 - n % 4) % 4
    return ((kind >> 4) & 1) | ((kind >> 7) & 2), msg[8:20], attrs


class TurnClient:
    def __init__(self, server, username, password):
        self.server = server
        self.username, self.password = username, password
        self.realm = self.nonce = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.relayed = self.mapped = None

    def _key(self):
        text = f"{self.username}:{self.realm.decode()}:{self.password}"
        return hashlib.md5(text.encode()).digest()

    def _exchange(self, msg, tid, timeout=3.0):
        """Sends `msg` (again every 500 ms, RFC 8489 §6.2.1 style) until its response."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.sendto(msg, self.server)
            resend = min(deadline, time.monotonic() + 0.5)
            while time.monotonic() < resend:
                self.sock.settimeout(max(0.01, resend - time.monotonic()))
                try:
                    data, _ = self.sock.recvfrom(65536)
                except socket.timeout:
                    break
                if len(data) >= 20 and data[0] < 2 and data[8:20] == tid:
                    return parse(data)
        raise TimeoutError("no TURN response")

    def request(self, method, attrs, what):
        """One authenticated request; answers a 401/438 challenge once."""
        for _ in range(2):
            tid = os.urandom(12)
            if self.nonce is None:
                msg = message(method, tid, attrs)
            else:
                creds = [
                    attr(USERNAME, self.username.encode()),
                    attr(REALM, self.realm),
                    attr(NONCE, self.nonce),
                ]
                msg = message(method, tid, attrs + creds, self._key())
            cls, _, rattrs = self._exchange(msg, tid)
            if cls == 2:
                return rattrs
            value = rattrs.get(ERROR_CODE, b"\0\0\0\0")
            code = (value[2] & 7) * 100 + value[3]
            if code in (401, 438) and REALM in rattrs and NONCE in rattrs:
                first = self.nonce is None or code == 438
                self.realm, self.nonce = rattrs[REALM], rattrs[NONCE]
                if first:
                    continue
            raise TurnError(what, code)
        raise TurnError(what, code)

    def allocate(self):
        # REQUESTED-TRANSPORT: UDP (17).
        rattrs = self.request(ALLOCATE, [attr(REQUESTED_TRANSPORT, b"\x11\0\0\0")], "allocate")
        self.relayed = parse_xor_addr(rattrs[XOR_RELAYED_ADDRESS])
        self.mapped = parse_xor_addr(rattrs[XOR_MAPPED_ADDRESS])
        return self.relayed

    def bind_channel(self, peer, channel=0x4000):
        """CreatePermission, then ChannelBind (which also installs the permission)."""
        self.request(CREATE_PERMISSION, [attr(XOR_PEER_ADDRESS, xor_addr(peer))], "permission")
        self.request(
            CHANNEL_BIND,
            [
                attr(CHANNEL_NUMBER, struct.pack("!HH", channel, 0)),
                attr(XOR_PEER_ADDRESS, xor_addr(peer)),
            ],
            "channel bind",
        )
        self.channel = channel

    def send(self, data):
        self.sock.sendto(struct.pack("!HH", self.channel, len(data)) + data, self.server)

    def recv(self, timeout):
        """The next ChannelData payload on our channel, or None at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data, _ = self.sock.recvfrom(65536)
            except socket.timeout:
                return None
            if len(data) >= 4 and 0x40 <= data[0] <= 0x4F:
                channel, length = struct.unpack("!HH", data[:4])
                if channel == self.channel:
                    return data[4 : 4 + length]
        return None

    def release(self):
        """Refresh with LIFETIME 0 frees the allocation (RFC 8656 §7.3)."""
        try:
            self.request(REFRESH, [attr(LIFETIME, b"\0\0\0\0")], "refresh")
        finally:
            self.sock.close()
