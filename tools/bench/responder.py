#!/usr/bin/env python3
"""A do-nothing memcached text responder on uvloop: the bench's ceiling.

It answers ``get KEY...`` with one fixed value per key and ``set`` with
STORED after reading the data block, doing no other work: what it serves
per second is what a Python event loop on this machine can serve at all,
so securecache's figures are read against it as well as against memcached.

    responder.py PORT [VALUE_SIZE]
"""

from __future__ import annotations

import asyncio
import sys


class Responder(asyncio.Protocol):
    """Parses just enough of the text protocol to answer get and set."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.buffer = bytearray()
        self.skip = 0
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        out = []
        while True:
            if self.skip:
                if len(buffer) < self.skip:
                    break
                del buffer[:self.skip]
                self.skip = 0
                out.append(b"STORED\r\n")
                continue
            end = buffer.find(b"\n")
            if end < 0:
                break
            words = bytes(buffer[:end]).split()
            del buffer[:end + 1]
            if not words:
                continue
            if words[0] == b"get" or words[0] == b"gets":
                for key in words[1:]:
                    out.append(b"VALUE %s 0 %d\r\n%s\r\n"
                               % (key, len(self.value), self.value))
                out.append(b"END\r\n")
            elif words[0] == b"set" and len(words) >= 5:
                self.skip = int(words[4]) + 2
            elif words[0] == b"version":
                out.append(b"VERSION responder\r\n")
            else:
                out.append(b"ERROR\r\n")
        if out:
            self.transport.write(b"".join(out))


def main() -> None:
    port = int(sys.argv[1])
    value = b"x" * (int(sys.argv[2]) if len(sys.argv) > 2 else 32)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Responder(value),
                                          "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()
    import uvloop
    uvloop.run(serve())


if __name__ == "__main__":
    main()
