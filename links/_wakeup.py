"""``WakeupSocketpair``: how another thread interrupts the poll thread's wait in its selector.

The poll thread sleeps in its selector (on Linux, in ``epoll_wait``) and is the only thread
that may touch the selector. Another thread that needs it to do something (register a
receiver, close an fd, stop) puts a command on a queue and then writes one byte to this
socketpair, whose read end is registered in the selector like any other socket: the wait
returns, the poll thread drains the byte(s) and then the queue.

Details that matter:

* Both ends are nonblocking. If the pipe is full, ``wake()`` just returns: a full pipe
  already guarantees the poll thread will wake, and one wakeup covers any number of commands
  because the poll thread drains the whole queue each time.
* ``drain()`` reads until ``EAGAIN`` so a burst of wakeups costs one pass, not one per byte.
* A socketpair rather than ``os.pipe`` keeps it portable and gives it ``fileno()``.
"""

from __future__ import annotations

import socket

__all__ = ["WakeupSocketpair"]


class WakeupSocketpair:
    def __init__(self) -> None:
        self.wakeup_sock, self.write_sock = socket.socketpair()
        self.wakeup_sock.setblocking(False)
        self.write_sock.setblocking(False)

    def fileno(self) -> int:
        return self.wakeup_sock.fileno()

    def wake(self) -> None:
        """Make the poll thread's wait return soon. Safe from any thread."""
        try:
            self.write_sock.send(b"\x00")
        except (BlockingIOError, InterruptedError):
            pass  # pipe full: a wakeup is already pending
        except OSError:
            pass  # closed during shutdown: nobody is waiting any more

    def drain(self) -> None:
        """Consume every pending wakeup byte (poll thread only)."""
        try:
            while self.wakeup_sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def close(self) -> None:
        self.wakeup_sock.close()
        self.write_sock.close()
