#!/usr/bin/python3
"""A real XMPP client (Debian's python3-slixmpp) against Prosody running
plugins/prosody/mod_kiro.lua. Each asker logs in and messages the bot at
the same moment; the pinger (if any) pings the server every 50 ms until
every answer is whole. Prints one JSON line: per asker, the bot's messages
as they came (ms since the questions went out, body, the id a correction
replaces, chat state), and the pinger's round trips in ms.

Usage: xmpp_bot.py PORT BOT ASKER[,ASKER...] [PINGER]  (passwords: "pw")"""
import asyncio
import json
import sys
import time

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

PORT, BOT, ASKERS = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
PINGER = sys.argv[4] if len(sys.argv) > 4 else None
NS_CORRECT = "{urn:xmpp:message-correct:0}replace"
NS_STATES = "http://jabber.org/protocol/chatstates"


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid):
        super().__init__(jid, "pw")
        self.register_plugin("xep_0199")
        self["feature_mechanisms"].unencrypted_plain = True
        self.got, self.t0 = [], None
        self.ready, self.whole = asyncio.Event(), asyncio.Event()
        self.add_event_handler("session_start", self.start)
        # Every message stanza, those with no body (a chat state alone) too.
        self.register_handler(Callback("bot", MatchXPath("{jabber:client}message"), self.on_message))

    async def start(self, _):
        self.send_presence()
        self.ready.set()

    def on_message(self, msg):
        if msg["from"].bare != BOT or self.t0 is None:
            return
        replace = msg.xml.find(NS_CORRECT)
        state = next((c.tag.split("}")[1] for c in msg.xml if c.tag.startswith("{" + NS_STATES)), None)
        self.got.append({"ms": (time.monotonic() - self.t0) * 1000, "body": msg["body"] or None,
                         "replaces": replace.get("id") if replace is not None else None,
                         "state": state, "id": msg["id"]})
        if state == "active":
            self.whole.set()


async def main():
    users = ASKERS + ([PINGER] if PINGER else [])
    clients = {u: Client(u) for u in users}
    for c in clients.values():
        c.connect(address=("127.0.0.1", PORT), force_starttls=False, disable_starttls=True)
    try:  # (a busy machine, a sanitized Prosody: logging in may take a while)
        await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients.values())), 60)
    except asyncio.TimeoutError:
        sys.exit("not logged in after 60 s: " + ", ".join(u for u, c in clients.items() if not c.ready.is_set()))
    rtts, done = [], False

    async def ping():
        p = clients[PINGER]
        while not done:
            t = time.monotonic()
            await p["xep_0199"].send_ping(p.boundjid.domain, timeout=10)
            rtts.append((time.monotonic() - t) * 1000)
            await asyncio.sleep(0.05)

    pinger = asyncio.ensure_future(ping()) if PINGER else None
    await asyncio.sleep(0.2)
    for u in ASKERS:
        c = clients[u]
        c.t0 = time.monotonic()
        c.send_message(mto=BOT, mbody="hello from %s: one two three four five six" % u.split("@")[0], mtype="chat")
    await asyncio.wait_for(asyncio.gather(*(clients[u].whole.wait() for u in ASKERS)), 30)
    done = True
    if pinger:
        await pinger
    print(json.dumps({"answers": {u: clients[u].got for u in ASKERS}, "pings_ms": rtts}))
    for c in clients.values():
        c.disconnect()
    await asyncio.sleep(0.2)


asyncio.get_event_loop().run_until_complete(main())
