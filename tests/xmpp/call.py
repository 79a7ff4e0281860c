"""A call negotiated over XMPP, with media through the TURN relay the server announces.

    python3 call.py --server 127.0.0.1:5222 --domain example.org --password pw \
        [--packets 200] [--size 172]

Two slixmpp clients, alice@DOMAIN/laptop and bob@DOMAIN/phone, sign in to the server and
each asks it for external services (XEP-0215). Each allocates on the `turn`/udp service
with exactly the credentials it was handed. Then, through the XMPP server:

1. alice proposes a call to bob's bare JID (XEP-0353 Jingle Message Initiation,
   `<propose/>` in a message); bob's device answers `<proceed/>` from its full JID;
2. alice sends bob's full JID a Jingle `session-initiate` (XEP-0166) with an RTP audio
   description (XEP-0167, Opus, her SSRC per XEP-0339) and an ICE-UDP transport
   (XEP-0176) whose one candidate is her relayed address (`type='relay'`); bob acks,
   binds a channel to that address on his allocation, and answers `session-accept` with
   his SSRC and his relayed address; alice acks and binds a channel to his.
3. Media, relay to relay: alice sends `--packets` RTP packets of `--size` bytes (12-byte
   header, pseudo-random payload standing in for SRTP ciphertext and a 10-byte tag)
   every 5 ms; bob starts sending his as soon as her first one arrives (so her
   permission for his relayed address is known to be in place). Each side checks the
   SSRC against the one signalled over Jingle and the payload byte for byte.
4. alice sends `session-terminate`; both free their allocations (Refresh, lifetime 0).

Prints one JSON line with what each side allocated, was told over XMPP, sent and
received. Exits non-zero with the reason on stderr when a step fails.
"""

import argparse
import asyncio
import hashlib
import json
import struct
import sys
import time
import uuid
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from turn_udp import TurnClient
from xmpp_client import Client

JINGLE = "urn:xmpp:jingle:1"
RTP = "urn:xmpp:jingle:apps:rtp:1"
ICE_UDP = "urn:xmpp:jingle:transports:ice-udp:1"
SSMA = "urn:xmpp:jingle:apps:rtp:ssma:0"
JMI = "urn:xmpp:jingle-message:0"
STEP = 10.0  # bound on each signalling step, in seconds
MEDIA_LIMIT = 30.0


def rtp_packet(ssrc, seq, size):
    header = struct.pack("!BBHII", 0x80, 111, seq & 0xFFFF, seq * 960, ssrc)
    return header + payload(ssrc, seq, size - len(header))


def payload(ssrc, seq, n):
    out, counter = b"", 0
    while len(out) < n:
        out += hashlib.sha256(f"{ssrc}:{seq}:{counter}".encode()).digest()
        counter += 1
    return out[:n]


def content(creator, ssrc, turn, ufrag):
    """`<content/>`: an Opus audio description with our SSRC and our relayed address as
    the one ICE candidate (server-reflexive address as rel-addr, as ICE does)."""
    c = ET.Element(f"{{{JINGLE}}}content", creator=creator, name="audio", senders="both")
    d = ET.SubElement(c, f"{{{RTP}}}description", media="audio", ssrc=str(ssrc))
    ET.SubElement(
        d, f"{{{RTP}}}payload-type", id="111", name="opus", clockrate="48000", channels="2"
    )
    ET.SubElement(d, f"{{{SSMA}}}source", ssrc=str(ssrc))
    t = ET.SubElement(c, f"{{{ICE_UDP}}}transport", ufrag=ufrag, pwd=uuid.uuid4().hex)
    ip, port = turn.relayed
    ET.SubElement(
        t,
        f"{{{ICE_UDP}}}candidate",
        component="1",
        foundation="1",
        generation="0",
        id=uuid.uuid4().hex[:10],
        ip=ip,
        port=str(port),
        priority=str((0 << 24) | (65535 << 8) | 255),  # RFC 8445 §5.1.2.1, relay type
        protocol="udp",
        type="relay",
        network="0",
        **{"rel-addr": turn.mapped[0], "rel-port": str(turn.mapped[1])},
    )
    return c


def read_content(jingle):
    """(peer SSRC, peer relay candidate (ip, port)) from a received `<jingle/>`."""
    c = jingle.find(f"{{{JINGLE}}}content")
    d = c.find(f"{{{RTP}}}description")
    cand = c.find(f"{{{ICE_UDP}}}transport/{{{ICE_UDP}}}candidate")
    if cand is None or cand.get("type") != "relay":
        raise RuntimeError("no relay candidate in the Jingle content")
    return int(d.get("ssrc")), (cand.get("ip"), int(cand.get("port")))


def jingle_iq(client, to, action, sid, initiator, extra=None):
    iq = client.Iq()
    iq["type"] = "set"
    iq["to"] = to
    j = ET.Element(f"{{{JINGLE}}}jingle", action=action, sid=sid, initiator=initiator)
    if extra is not None:
        j.append(extra)
    iq.append(j)
    return iq, j


def turn_service(services):
    entries = [s for s in services if s.get("type") == "turn" and s.get("transport") == "udp"]
    if len(entries) != 1:
        raise RuntimeError(f"expected one turn/udp service, got {services}")
    return entries[0]


def media(turn, ssrc, peer_ssrc, count, size, wait_first):
    """Sends `count` packets every 5 ms (after the peer's first one when `wait_first`) and
    receives the peer's until it has them all or MEDIA_LIMIT passes."""
    got, intact, foreign, sent = set(), 0, 0, 0
    started = not wait_first
    deadline = time.monotonic() + MEDIA_LIMIT
    next_send = time.monotonic()
    while time.monotonic() < deadline and (sent < count or len(got) < count):
        now = time.monotonic()
        if started and sent < count and now >= next_send:
            turn.send(rtp_packet(ssrc, sent, size))
            sent += 1
            next_send += 0.005
            continue
        wait = max(0.0005, next_send - now) if started and sent < count else 0.05
        packet = turn.recv(wait)
        if packet is None:
            continue
        started = True
        if len(packet) < 12:
            foreign += 1
            continue
        _, _, seq, _, their_ssrc = struct.unpack("!BBHII", packet[:12])
        if their_ssrc != peer_ssrc:
            foreign += 1
            continue
        got.add(seq)
        if packet == rtp_packet(peer_ssrc, seq, size):
            intact += 1
    return {"sent": sent, "received": len(got), "intact": intact, "foreign": foreign}


async def run(args):
    domain = args.domain
    alice = Client(f"alice@{domain}/laptop", args.password)
    bob = Client(f"bob@{domain}/phone", args.password)
    await asyncio.gather(alice.sign_in(args.server), bob.sign_in(args.server))
    report = {"alice": {"jid": str(alice.boundjid)}, "bob": {"jid": str(bob.boundjid)}}
    loop = asyncio.get_running_loop()

    # XEP-0215, then an allocation each with exactly those credentials.
    turns = {}
    for name, client in (("alice", alice), ("bob", bob)):
        service = turn_service(await client.external_services())
        server = (service["host"], service["port"])
        turn = TurnClient(server, service["username"], service["password"])
        await asyncio.to_thread(turn.allocate)
        turns[name] = turn
        report[name].update(
            turn_username=service["username"],
            turn_server=f"{service['host']}:{service['port']}",
            relayed=f"{turn.relayed[0]}:{turn.relayed[1]}",
        )
    ssrc = {"alice": 0x11111111, "bob": 0x22222222}
    sid = uuid.uuid4().hex

    # bob's device: answers a JMI propose with proceed, a session-initiate with an ack
    # and a session-accept, a session-terminate with an ack.
    bob_state = {"initiate": loop.create_future(), "terminated": loop.create_future()}

    def bob_on_message(msg):
        propose = msg.xml.find(f"{{{JMI}}}propose")
        if propose is None or propose.get("id") != sid:
            return
        report["bob"]["propose_from"] = str(msg["from"])
        reply = bob.Message()
        reply["to"] = msg["from"]
        reply["type"] = "chat"
        reply.append(ET.Element(f"{{{JMI}}}proceed", id=sid))
        reply.send()

    def bob_on_jingle(iq):
        j = iq.xml.find(f"{{{JINGLE}}}jingle")
        iq.reply().send()  # XEP-0166 §7.2: ack every Jingle IQ
        if j.get("sid") != sid:
            return
        if j.get("action") == "session-initiate" and not bob_state["initiate"].done():
            bob_state["initiate"].set_result((j, str(iq["from"])))
        elif j.get("action") == "session-terminate" and not bob_state["terminated"].done():
            bob_state["terminated"].set_result(True)

    # slixmpp's "message" event is only for messages with a body: match the JMI element.
    bob.register_handler(
        Callback("jmi", MatchXPath(f"{{jabber:client}}message/{{{JMI}}}propose"), bob_on_message)
    )
    bob.register_handler(
        Callback("jingle", MatchXPath(f"{{jabber:client}}iq/{{{JINGLE}}}jingle"), bob_on_jingle)
    )

    alice_state = {"proceed": loop.create_future(), "accept": loop.create_future()}

    def alice_on_message(msg):
        proceed = msg.xml.find(f"{{{JMI}}}proceed")
        if proceed is not None and proceed.get("id") == sid and not alice_state["proceed"].done():
            alice_state["proceed"].set_result(str(msg["from"]))

    def alice_on_jingle(iq):
        j = iq.xml.find(f"{{{JINGLE}}}jingle")
        iq.reply().send()
        accepted = j.get("sid") == sid and j.get("action") == "session-accept"
        if accepted and not alice_state["accept"].done():
            alice_state["accept"].set_result(j)

    alice.register_handler(
        Callback("jmi", MatchXPath(f"{{jabber:client}}message/{{{JMI}}}proceed"), alice_on_message)
    )
    alice.register_handler(
        Callback("jingle", MatchXPath(f"{{jabber:client}}iq/{{{JINGLE}}}jingle"), alice_on_jingle)
    )

    # 1. JMI: propose to the bare JID, proceed from bob's device.
    propose = alice.Message()
    propose["to"] = f"bob@{domain}"
    propose["type"] = "chat"
    p = ET.SubElement(propose.xml, f"{{{JMI}}}propose", id=sid)
    ET.SubElement(p, f"{{{RTP}}}description", media="audio")
    propose.send()
    bob_full = await asyncio.wait_for(alice_state["proceed"], STEP)
    report["alice"]["proceed_from"] = bob_full

    # 2. Jingle session-initiate → ack; session-accept → ack.
    offer = content("initiator", ssrc["alice"], turns["alice"], "alice")
    iq, _ = jingle_iq(alice, bob_full, "session-initiate", sid, str(alice.boundjid), offer)
    await iq.send(timeout=STEP)
    initiate, initiator = await asyncio.wait_for(bob_state["initiate"], STEP)
    peer_ssrc, candidate = read_content(initiate)
    report["bob"].update(
        initiate_from=initiator, candidate=f"{candidate[0]}:{candidate[1]}", peer_ssrc=peer_ssrc
    )
    await asyncio.to_thread(turns["bob"].bind_channel, candidate)
    answer = content("initiator", ssrc["bob"], turns["bob"], "bob")
    iq, j = jingle_iq(bob, initiator, "session-accept", sid, initiator, answer)
    j.set("responder", str(bob.boundjid))
    await iq.send(timeout=STEP)
    accept = await asyncio.wait_for(alice_state["accept"], STEP)
    peer_ssrc, candidate = read_content(accept)
    report["alice"].update(candidate=f"{candidate[0]}:{candidate[1]}", peer_ssrc=peer_ssrc)
    await asyncio.to_thread(turns["alice"].bind_channel, candidate)

    # 3. Media both ways, relay to relay.
    def side(name, wait_first):
        peer_ssrc = report[name]["peer_ssrc"]
        return asyncio.to_thread(
            media, turns[name], ssrc[name], peer_ssrc, args.packets, args.size, wait_first
        )

    a, b = await asyncio.gather(side("alice", False), side("bob", True))
    report["alice"]["media"], report["bob"]["media"] = a, b

    # 4. Hang up, free the allocations, sign out.
    iq, j = jingle_iq(alice, bob_full, "session-terminate", sid, str(alice.boundjid))
    ET.SubElement(ET.SubElement(j, f"{{{JINGLE}}}reason"), f"{{{JINGLE}}}success")
    await iq.send(timeout=STEP)
    report["bob"]["terminated"] = await asyncio.wait_for(bob_state["terminated"], STEP)
    for turn in turns.values():
        await asyncio.to_thread(turn.release)
    alice.disconnect()
    bob.disconnect()
    print(json.dumps(report), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port of the c2s listener")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--packets", type=int, default=200)
    parser.add_argument("--size", type=int, default=172)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # the test shows this with the servers' logs
        print(f"call: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
