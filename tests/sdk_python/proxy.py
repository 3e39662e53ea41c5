"""A TCP proxy on loopback that can drop every open connection at once: a real dropped
stream (both ends see the socket close), for the watch's resume."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading


class DroppingProxy:
    def __init__(
        self, target_host: str, target_port: int, *, lose_first_reply: bool = False
    ) -> None:
        """`lose_first_reply`: the first connection's first bytes from the target (an HTTP/1.1
        response: the request was served) are not forwarded; both sides are reset instead."""
        self._target = (target_host, target_port)
        self._lose_first_reply = lose_first_reply
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.connections = 0
        self.lost_replies = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self.connections += 1
                self._open += [client, upstream]
                lose = self._lose_first_reply and self.connections == 1
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, lose), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, lose: bool = False) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if lose:
                    self.lost_replies += 1
                    self.drop_all()
                    return
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def drop_all(self) -> None:
        """Reset every open connection (the listener keeps accepting new ones)."""
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                # Linger 0: the close sends a reset; shutdown wakes the pipe threads' recv.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.drop_all()
