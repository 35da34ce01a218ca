"""A tiny authoritative DNS server for tests: ``python tests/support/dns_server.py PORT MAPPING_FILE``.

Serves UDP and TCP on 127.0.0.1:PORT. The JSON mapping ``{"name.": ["127.0.0.1", "::1", ...]}`` is
re-read on every query, so a test changes the answers by rewriting the file. IPv4 addresses answer A
queries, IPv6 ones AAAA queries, TTL 1. An unknown name gets NXDOMAIN; a known name with no address of
the asked type gets NOERROR with an empty answer; an unreadable mapping gets SERVFAIL.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import socketserver
import struct
import sys
import threading
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

HOST = "127.0.0.1"
TTL = 1


def answer(wire: bytes, mapping_file: Path) -> bytes | None:
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return None  # not a DNS message: drop it
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    try:
        raw = json.loads(mapping_file.read_text())
        mapping = {(k if k.endswith(".") else k + ".").lower(): list(v) for k, v in raw.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire()
    addresses = mapping.get(question.name.to_text().lower())
    if addresses is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        version = 4 if question.rdtype == dns.rdatatype.A else 6
        wanted = [a for a in addresses if ipaddress.ip_address(a).version == version]
        if wanted:
            rdtype = dns.rdatatype.to_text(question.rdtype)
            response.answer.append(dns.rrset.from_text(question.name, TTL, "IN", rdtype, *wanted))
    return response.to_wire()


def serve(port: int, mapping_file: Path) -> None:
    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            reply = answer(data, mapping_file)
            if reply is not None:
                sock.sendto(reply, self.client_address)

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while True:
                head = self._read(2)
                if head is None:
                    return
                data = self._read(struct.unpack("!H", head)[0])
                if data is None:
                    return
                reply = answer(data, mapping_file)
                if reply is None:
                    return
                self.request.sendall(struct.pack("!H", len(reply)) + reply)

        def _read(self, n: int) -> bytes | None:
            buf = b""
            while len(buf) < n:
                chunk = self.request.recv(n - len(buf))
                if not chunk:
                    return None
                buf += chunk
            return buf

    socketserver.ThreadingTCPServer.allow_reuse_address = True  # rebind at once after a restart
    udp = socketserver.ThreadingUDPServer((HOST, port), Udp)
    tcp = socketserver.ThreadingTCPServer((HOST, port), Tcp)
    udp.daemon_threads = tcp.daemon_threads = True
    for server in (udp, tcp):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"dns server listening on {HOST}:{port} (udp+tcp), mapping {mapping_file}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    for server in (udp, tcp):
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: dns_server.py PORT MAPPING_FILE")
    serve(int(sys.argv[1]), Path(sys.argv[2]))
