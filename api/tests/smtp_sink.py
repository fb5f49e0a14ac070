"""A real SMTP server for the api tests: accepts every mail and writes each
one as JSON ({to, from, subject, text, html, multipart}) into a directory.

Usage: python3 smtp_sink.py OUT_DIR [PORT]

Prints "PORT <n>" on stdout once it listens (PORT 0 or absent = any free
port), then serves until it is killed.
"""

import asyncio
import email
import email.policy
import json
import os
import socket
import sys

try:
    from aiosmtpd.controller import Controller
except ImportError:  # the Rust test turns this exit code into a clear message
    sys.stderr.write("aiosmtpd is missing: pip install aiosmtpd\n")
    sys.exit(3)


class Sink:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = {"text": None, "html": None}
        for part in message.walk():
            kind = part.get_content_type()
            if kind == "text/plain" and parts["text"] is None:
                parts["text"] = part.get_content()
            elif kind == "text/html" and parts["html"] is None:
                parts["html"] = part.get_content()
        record = {
            "to": envelope.rcpt_tos,
            "from": envelope.mail_from,
            "subject": str(message.get("Subject", "")),
            "multipart": message.get_content_type(),
            "text": parts["text"],
            "html": parts["html"],
        }
        self.count += 1
        path = os.path.join(self.out_dir, f"{self.count:05d}.json")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)  # readers never see a half-written mail
        return "250 OK"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    out_dir = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    if port == 0:
        port = free_port()
    os.makedirs(out_dir, exist_ok=True)
    controller = Controller(Sink(out_dir), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"PORT {port}", flush=True)
    try:
        asyncio.run(asyncio.Event().wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
