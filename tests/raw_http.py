"""HTTP/1.1 over a plain socket: to see the exact bytes a server sends, body framing
included, where a client library would hide them (or refuse to send them).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass


@dataclass(frozen=True)
class RawAnswer:
    status: int
    # Lowercase names; a repeated header keeps its last value.
    headers: dict[str, str]
    # Every byte after the header block, up to the server's close.
    body: bytes


def request_head(
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    host: str = "127.0.0.1",
) -> bytes:
    """A request line and headers, ``Connection: close`` among them, and the blank line.

    ``host`` is sent as it is, one byte per character: any Host a client could send.
    """
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def exchange(
    port: int, data: bytes, *, close_sending: bool = False, timeout: float = 30
) -> RawAnswer:
    """Send ``data``, then read until the server closes; the first answer, parsed.

    ``close_sending`` shuts the sending side after ``data``, as a client that gave up
    does. What follows the first answer's header block is all in ``body``: for a HEAD,
    any byte there is a body the server should not have sent.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if close_sending:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return parse_answer(received)


def parse_answer(received: bytes) -> RawAnswer:
    head, separator, body = received.partition(b"\r\n\r\n")
    assert separator, f"no complete header block in {received[:300]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(int(status_line.split()[1]), headers, body)


def chunked(*pieces: bytes) -> bytes:
    """``pieces`` in chunked framing, each a chunk, with the last chunk after them."""
    framed = b"".join(
        b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces if piece
    )
    return framed + b"0\r\n\r\n"
