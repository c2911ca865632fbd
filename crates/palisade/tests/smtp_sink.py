"""An SMTP server for the tests (aiosmtpd, a real server): every message it accepts is
appended as one JSON line to the file named on the command line. Prints "ready" once it
listens; runs until killed.

    smtp_sink.py PORT MESSAGES                        plain SMTP
    smtp_sink.py PORT MESSAGES --starttls CERT KEY    STARTTLS offered and required
    smtp_sink.py PORT MESSAGES --smtps CERT KEY       TLS from the first byte

CERT (the chain, PEM) and KEY (PEM) are the server's."""

import json
import logging
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import TLSSetupException


class Sink:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        line = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            # Whether this message came over TLS (after STARTTLS, or smtps).
            "tls": server.transport.get_extra_info("ssl_object") is not None,
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return "250 OK"


class TlsFailureInOneLine(logging.Filter):
    """A client that does not trust the certificate is a case the tests provoke: one line
    instead of aiosmtpd's traceback."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TLSSetupException):
            print(f"smtp_sink: a client's TLS handshake failed: {error.__cause__}", file=sys.stderr, flush=True)
            return False
        return True


logging.getLogger("mail.log").addFilter(TlsFailureInOneLine())
port, path, *tls = sys.argv[1:]
options = {}
if tls:
    mode, cert, key = tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if mode == "--starttls":
        options = {"tls_context": context, "require_starttls": True}
    elif mode == "--smtps":
        options = {"ssl_context": context}
    else:
        sys.exit(f"unknown mode {mode}")
controller = Controller(Sink(path), hostname="127.0.0.1", port=int(port), **options)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
