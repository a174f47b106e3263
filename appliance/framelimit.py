"""Websocket messages over proxy.max_message_size, refused from their frame header.

aiohttp checks its own max_msg_size only once a frame's payload is buffered whole: 3.8.4 as
Debian 12 first shipped it (3.8.4-1+deb12u1) and 3.11 upstream alike, so one 1 GiB frame
cost the hub 1 GiB. FrameLimit stands between a websocket's transport and aiohttp's protocol,
reads only frame headers (RFC 6455 §5.2) and lets payload bytes through as they come; a data
frame that would make its message larger than the limit is never handed on. Instead the peer
gets a Close with 1009 (RFC 6455 §7.4.1: "a message that is too big for it to process"); the
rest of its frame is read and dropped, and the connection closed at its Close answer (or
after LINGER); the relay then closes the other side with 1009 too.
"""

import asyncio
import logging
import os
import struct
import weakref

log = logging.getLogger(__name__)

#: RFC 6455 §7.4.1: the message is too big to process.
MESSAGE_TOO_BIG = 1009
#: An HTTP response head longer than this is not a websocket handshake worth watching.
MAX_HEAD = 64 * 1024
#: After a refusal, how long the peer has to finish sending and answer our Close (aiohttp
#: waits as long for a Close answer).
LINGER = 10.0
#: RFC 6455 §5.2: the Close opcode.
CLOSE = 0x8
#: Opcodes below this carry data (continuation, text, binary); 0x8-0xF are control frames
#: (RFC 6455 §5.5), at most 125 bytes each, which aiohttp checks itself.
CONTROL = 0x8

#: The FrameLimit watching each transport's socket, so the relay can ask after a refusal.
_watching: "weakref.WeakValueDictionary[object, FrameLimit]" = weakref.WeakValueDictionary()


def frame_header(buf, pos: int) -> tuple[int, bool, int, int] | None:
    """(header length, FIN, opcode, payload length) of the frame at buf[pos:], or None if
    its header is not all there yet (RFC 6455 §5.2)."""
    if len(buf) - pos < 2:
        return None
    first, second = buf[pos], buf[pos + 1]
    size, length = second & 0x7F, 2
    if size == 126:
        length = 4
    elif size == 127:
        length = 10
    masked = 4 if second & 0x80 else 0
    if len(buf) - pos < length + masked:
        return None
    if size == 126:
        size = struct.unpack_from("!H", buf, pos + 2)[0]
    elif size == 127:
        size = struct.unpack_from("!Q", buf, pos + 2)[0]
    return length + masked, bool(first & 0x80), first & 0x0F, size


def close_frame(code: int, *, masked: bool) -> bytes:
    """A Close frame with code; masked as a client must send it (RFC 6455 §5.3)."""
    payload = struct.pack("!H", code)
    if not masked:
        return bytes((0x88, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x88, 0x80 | len(payload))) + key + bytes(
        b ^ key[i % 4] for i, b in enumerate(payload))


class FrameLimit(asyncio.Protocol):
    """A transport's protocol in front of aiohttp's: hands on every byte except a data frame
    whose message would pass the limit, and fails the connection with 1009 instead."""

    def __init__(self, transport: asyncio.BaseTransport, limit: int, *, client: bool,
                 after_head: bool) -> None:
        self.transport = transport
        self.inner = transport.get_protocol()
        self.limit = limit
        self.client = client
        #: The HTTP response head still being read (a new upstream connection), else None.
        self.head: bytearray | None = bytearray() if after_head else None
        self.watching = True  # False once the head shows no websocket: pass everything
        self.pending = b""  # a frame header split across reads, held back until whole
        self.skip = 0  # payload bytes of the current frame still to pass through
        self.message = 0  # data bytes of the current fragmented message so far
        self.refused = False
        self.linger: asyncio.TimerHandle | None = None

    @classmethod
    def install(cls, transport: asyncio.BaseTransport, limit: int, *, client: bool,
                after_head: bool = False) -> "FrameLimit":
        """Put a FrameLimit in front of transport's protocol (asyncio's set_protocol)."""
        guard = cls(transport, limit, client=client, after_head=after_head)
        transport.set_protocol(guard)
        _watching[transport.get_extra_info("socket")] = guard
        return guard

    def remove(self) -> None:
        """Give the transport back to aiohttp's protocol (nothing was held back yet)."""
        if self.transport.get_protocol() is self:
            self.transport.set_protocol(self.inner)

    @staticmethod
    def on(sock: object) -> "FrameLimit | None":
        """The FrameLimit watching the transport of this socket (get_extra_info), if any."""
        return _watching.get(sock) if sock is not None else None

    def data_received(self, data: bytes) -> None:
        """Hand on data up to an oversized frame's header; after it, only look for a Close."""
        start = 0
        if self.head is not None:
            start = self._end_of_head(data)
            if start is None:
                self.inner.data_received(data)
                return
        if not self.watching:
            self.inner.data_received(data)
            return
        buf = self.pending + data if self.pending else data
        self.pending = b""
        for pos, fin, opcode, size in self._headers(buf, start):
            if self.refused:
                if opcode == CLOSE:  # the peer answered our Close: nothing left unread
                    self.transport.close()
                    return
            elif opcode < CONTROL:
                total = self.message + size
                if total > self.limit:
                    self._refuse(buf[:pos], total)  # its payload is skipped, not handed on
                self.message = 0 if fin else total
        if not self.refused:
            self.inner.data_received(buf[:len(buf) - len(self.pending)])

    def _end_of_head(self, data: bytes) -> int | None:
        """Where frames start in data, once the response head has ended; None before that."""
        assert self.head is not None
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self.head, self.watching = None, False
            return None
        # Only a 101 answer turns the connection into websocket frames (RFC 6455 §4.1).
        self.watching = self.head.startswith(b"HTTP/1.1 101 ")
        start = len(data) - (len(self.head) - end - 4)
        self.head = None
        return start

    def _headers(self, buf: bytes, pos: int):
        """Yield (offset, FIN, opcode, payload length) of each frame header in buf from pos,
        passing over payloads; a header cut off at the end is kept in self.pending."""
        n = len(buf)
        while pos < n:
            if self.skip:
                step = min(self.skip, n - pos)
                self.skip -= step
                pos += step
                continue
            header = frame_header(buf, pos)
            if header is None:
                self.pending = bytes(buf[pos:])
                return
            length, fin, opcode, size = header
            yield pos, fin, opcode, size
            pos += length
            self.skip = size

    def _refuse(self, before: bytes, size: int) -> None:
        """Hand on what came before; send Close with 1009 and read on, handing nothing more
        on, until the peer's Close (or LINGER): closing with its bytes unread would reset the
        connection and could lose our Close on the way (RFC 6455 §7.1.1)."""
        self.refused = True
        if before:
            self.inner.data_received(before)
        log.warning("refused a websocket message of %d bytes from the %s (over "
                    "proxy.max_message_size, %d); closing it with 1009", size,
                    "notebook server" if self.client else "browser", self.limit)
        self.transport.write(close_frame(MESSAGE_TOO_BIG, masked=self.client))
        self.linger = asyncio.get_running_loop().call_later(LINGER, self.transport.close)

    def eof_received(self) -> bool | None:
        """Passed on."""
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Passed on."""
        if self.linger is not None:
            self.linger.cancel()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Passed on: aiohttp's flow control."""
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Passed on: aiohttp's flow control."""
        self.inner.resume_writing()
