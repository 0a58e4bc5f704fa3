"""Uploads a file through a real Prosody with slixmpp (XEP-0363), then fetches the GET URL it was given.

Usage: python3 upload.py SERVICE_JID FILE    (run by scripts/prosody-trial/run.sh)
"""
import asyncio, sys, urllib.request, logging
import slixmpp

class Uploader(slixmpp.ClientXMPP):
    def __init__(self, service, path):
        super().__init__("alice@localhost", "alicepass")
        self.service, self.path = service, path
        self.register_plugin("xep_0030"); self.register_plugin("xep_0363")
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.add_event_handler("session_start", self.start)
        self.result = None
    async def start(self, _):
        try:
            url = await self.plugin["xep_0363"].upload_file(self.path, domain=self.service, timeout=20)
            self.result = url
        except Exception as e:
            self.result = "ERROR %r" % e
        self.disconnect()

async def main(service, path):
    xmpp = Uploader(service, path)
    xmpp.enable_plaintext = True
    xmpp.enable_starttls = False
    xmpp.enable_direct_tls = False
    xmpp.connect(host="127.0.0.1", port=15222)
    await asyncio.wait_for(xmpp.disconnected, 30)
    return xmpp.result

service, path = sys.argv[1], sys.argv[2]
url = asyncio.run(main(service, path))
print("URL:", url)
if url and url.startswith("http"):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = r.read()
            print("GET", r.status, r.headers.get("Content-Type"), r.headers.get("Content-Disposition"), "same bytes:", body == open(path, "rb").read())
    except urllib.error.HTTPError as e:
        print("GET", e.code, e.read()[:200])
