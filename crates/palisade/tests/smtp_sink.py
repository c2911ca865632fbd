"""An SMTP server for the tests (aiosmtpd, a real server): every message it accepts is
appended as one JSON line to the file named on the command line. Prints "ready" once it
listens; runs until killed."""

import json
import sys
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        line = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return "250 OK"


port, path = int(sys.argv[1]), sys.argv[2]
controller = Controller(Sink(path), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
