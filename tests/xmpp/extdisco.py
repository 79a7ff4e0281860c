"""Signs in to an XMPP server with slixmpp and asks it for external services (XEP-0215).

    python3 extdisco.py --server 127.0.0.1:5222 --jid alice@example.org --password pw

prints one JSON line: {"now": <Unix seconds>, "services": [{"type": "turn", "transport":
"udp", "host": ..., "port": ..., "username": ..., "password": ..., "expires": ...,
"expires_unix": ..., "restricted": "1"}, ...]}. Exits non-zero with the reason on stderr
when signing in or the request fails.
"""

import argparse
import asyncio
import json
import sys
import time

from xmpp_client import Client


async def run(args):
    client = Client(args.jid, args.password)
    await client.sign_in(args.server)
    try:
        services = await client.external_services()
    finally:
        client.disconnect()
    print(json.dumps({"now": int(time.time()), "services": services}), flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True, help="host:port of the c2s listener")
    parser.add_argument("--jid", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except Exception as e:  # the test shows this with Prosody's log
        print(f"extdisco: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
