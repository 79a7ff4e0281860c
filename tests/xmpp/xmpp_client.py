"""Shared by the XMPP test helpers: a slixmpp client signed in to the test's Prosody, and
XEP-0215 External Service Discovery through slixmpp's generic IQ API (slixmpp has no
XEP-0215 plugin).

The test's Prosody listens on loopback without TLS (it has no certificate), so the client
turns STARTTLS off and allows SCRAM over the plain stream; nothing else is changed from
slixmpp's defaults.
"""

import asyncio
import calendar
import time
import xml.etree.ElementTree as ET

import slixmpp

EXTDISCO = "urn:xmpp:extdisco:2"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(
            jid,
            password,
            plugin_config={"feature_mechanisms": {"unencrypted_scram": True}},
        )
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.ready = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("failed_auth", self._failed)

    async def _started(self, _event):
        self.send_presence()
        if not self.ready.done():
            self.ready.set_result(True)

    def _failed(self, _event):
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"{self.boundjid}: authentication failed"))

    async def sign_in(self, server, timeout=15.0):
        host, port = server.rsplit(":", 1)
        self.connect(host, int(port))
        await asyncio.wait_for(self.ready, timeout)

    async def external_services(self, timeout=10.0):
        """XEP-0215 §3.1: `<services/>` to the user's own server; every `<service/>` it
        lists, with `expires` also as Unix seconds (XEP-0082 UTC date-time)."""
        iq = self.Iq()
        iq["type"] = "get"
        iq["to"] = self.boundjid.domain
        iq.append(ET.Element(f"{{{EXTDISCO}}}services"))
        reply = await iq.send(timeout=timeout)
        services = reply.xml.find(f"{{{EXTDISCO}}}services")
        if services is None:
            raise RuntimeError(f"no <services/> in {reply}")
        found = []
        for service in services.findall(f"{{{EXTDISCO}}}service"):
            entry = dict(service.attrib)
            if "port" in entry:
                entry["port"] = int(entry["port"])
            if "expires" in entry:
                entry["expires_unix"] = xep0082_to_unix(entry["expires"])
            found.append(entry)
        return found


def xep0082_to_unix(stamp):
    """`2026-12-05T14:31:18Z` (Prosody writes UTC with a Z) → Unix seconds."""
    return calendar.timegm(time.strptime(stamp.rstrip("Z")[:19], "%Y-%m-%dT%H:%M:%S"))
