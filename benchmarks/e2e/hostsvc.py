"""Host services for the end-to-end benchmarks, each in its own process, on 127.0.0.1 only.

    python hostsvc.py echo   # echoes every byte back (interactive RTT, held connections, short ones)
    python hostsvc.py bulk   # "D <n>\\n": sends n bytes (0: until the client closes) then closes;
                             # "U <n>\\n" + n bytes: answers "<count>\\n" once n bytes have arrived

The process prints ``port=<N>`` on stdout once it listens, then serves until killed. It raises its
own open-file limit to the hard limit (10,000 held connections need as many sockets). The bytes a
download sends are a fixed pseudo-random 1 MiB block, repeated: the same data for every server.
"""

from __future__ import annotations

import asyncio
import random
import resource
import socket
import sys

BLOCK = random.Random(5).randbytes(1 << 20)
CHUNK = 1 << 16


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        return False  # close our side too


class Bulk(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.head = b""
        self.mode = ""
        self.remaining = 0
        self.endless = False
        self.count = 0
        self.offset = 0
        self.paused = False
        self.closed = False

    def data_received(self, data: bytes) -> None:
        if not self.mode:
            self.head += data
            if b"\n" not in self.head:
                if len(self.head) > 64:
                    self.transport.close()
                return
            line, data = self.head.split(b"\n", 1)
            kind, _, n = line.decode(errors="replace").partition(" ")
            self.mode, self.remaining = kind, int(n or 0)
            if self.mode == "D":
                self.endless = self.remaining == 0
                self._send()
                return
            if self.mode != "U":
                self.transport.close()
                return
        if self.mode == "U":
            self.count += len(data)
            if self.count >= self.remaining:
                self.transport.write(f"{self.count}\n".encode())
                self.transport.close()

    def _send(self) -> None:
        while not self.paused and not self.closed and (self.endless or self.remaining > 0):
            n = CHUNK if self.endless else min(CHUNK, self.remaining)
            end = self.offset + n
            if end <= len(BLOCK):
                chunk = BLOCK[self.offset:end]
            else:
                chunk = BLOCK[self.offset:] + BLOCK[:end - len(BLOCK)]
            self.offset = end % len(BLOCK)
            self.remaining -= n
            self.transport.write(chunk)
        if not self.endless and self.remaining <= 0 and not self.closed:
            self.closed = True
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


async def main(kind: str) -> None:
    factory = {"echo": Echo, "bulk": Bulk}[kind]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, "127.0.0.1", 0, backlog=4096, reuse_address=True)
    print(f"port={server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        asyncio.run(main(sys.argv[1]))
    except KeyboardInterrupt:
        pass
