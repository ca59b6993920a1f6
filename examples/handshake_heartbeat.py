"""A protocol with a login handshake, a server-side login deadline, and heartbeats.

The rules `links` protocols follow, shown on a small login protocol:

* the client sends its login from ``on_connect`` and reports ``is_connected()`` only once
  the answer came, so ``Clt.connect`` returns a logged-in connection (or raises);
* the server never waits for the login: the handshake *advances* in ``on_recv`` /
  ``send_reply`` on the poll thread, and a deadline scheduled with ``con.schedule`` in
  ``on_connect`` closes connections that stay silent;
* both sides send heartbeats every ``heartbeat_interval`` seconds (on the timer thread).

Three clients: alice logs in and reads heartbeats, mallory's password is refused, and a
silent client is disconnected by the server's deadline.

Run: python examples/handshake_heartbeat.py
"""

import logging
import time
from typing import Any

import structlog

import links

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

USERS = {"alice": "secret"}
LOGIN_DEADLINE = 0.3  # seconds a new connection has to log in


class JsonProtocol(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.JsonMessenger()


class LoginRejected(Exception):
    pass


class LoginServer(JsonProtocol):
    heartbeat_interval = 0.05

    def __init__(self) -> None:
        self.user: str | None = None  # per-connection state: one fresh instance per connection
        self.deadline: links.lowlevel.TimerHandle | None = None

    def on_connect(self, con: links.Handle) -> None:
        # Start the clock, do not wait: the poll thread serves every other connection too.
        def expire() -> links.TaskStatus:
            if self.user is None:
                print(f"  server: no login from {con.con_id.peer} within {LOGIN_DEADLINE}s, closing")
                con.close("login_timeout")  # a reason: the peer is to blame, logged as such
            return links.TaskStatus.TERMINATE  # run once

        # con.schedule ties the task to this connection: it is cancelled if the connection ends.
        self.deadline = con.schedule("login deadline", LOGIN_DEADLINE, expire)

    def on_recv(self, msg: Any) -> None:
        if msg["type"] == "login" and USERS.get(msg["user"]) == msg["password"]:
            self.user = msg["user"]
            if self.deadline is not None:
                self.deadline.cancel()

    def send_reply(self, msg: Any, con: links.Handle) -> None:
        if msg["type"] != "login":
            return  # heartbeats need no answer
        if self.user is not None:
            con.send({"type": "login_ok", "user": self.user}, timeout=0)
        else:
            con.send({"type": "login_rejected", "why": "bad user or password"}, timeout=0)
            con.close("login_rejected")

    def send_heartbeat(self, con: links.Handle) -> None:
        con.send({"type": "hb"}, timeout=0)  # a full socket means traffic flows anyway: skip


class LoginClient(JsonProtocol):
    heartbeat_interval = 0.05

    def __init__(self, user: str, password: str) -> None:
        self.credentials = {"type": "login", "user": user, "password": password}
        self.logged_in = False

    def on_connect(self, con: links.Handle) -> None:
        con.send(self.credentials)

    def on_recv(self, msg: Any) -> None:
        if msg["type"] == "login_ok":
            self.logged_in = True
        elif msg["type"] == "login_rejected":
            raise LoginRejected(msg["why"])  # during connect: closes and propagates

    def is_connected(self) -> bool:
        return self.logged_in  # Clt.connect receives until this turns True

    def send_heartbeat(self, con: links.Handle) -> None:
        con.send({"type": "hb"}, timeout=0)


with links.Svc.bind("127.0.0.1:0", protocol=LoginServer) as svc:
    svc.into_sender_with_spawned_recver()
    addr = f"127.0.0.1:{svc.local_addr[1]}"

    # 1. alice logs in; Clt.connect returns only once the handshake completed.
    with links.Clt.connect(addr, protocol=lambda: LoginClient("alice", "secret"), timeout=2.0) as alice:
        print("alice: connected and logged in:", alice.is_connected())
        first = alice.recv(timeout=2.0)  # login_ok was kept for recv by the handshake
        beats = [alice.recv(timeout=2.0)["type"] for _ in range(3)]
        print(f"alice: received {first['type']}, then {beats}")
        assert first["type"] == "login_ok" and beats == ["hb", "hb", "hb"]

    # 2. mallory's password is wrong: the rejection surfaces from Clt.connect.
    try:
        links.Clt.connect(addr, protocol=lambda: LoginClient("mallory", "guess"), timeout=2.0)
        raise SystemExit("mallory should have been rejected")
    except LoginRejected as e:
        print("mallory: login rejected:", e)

    # 3. A client that never logs in: the server's deadline closes it.
    started = time.monotonic()
    with links.Clt.connect(addr, protocol=JsonProtocol) as silent:
        try:
            while silent.recv(timeout=5.0)["type"] == "hb":
                pass  # the server's heartbeats arrive until the deadline fires
        except links.BrokenError as e:
            print(f"silent: disconnected by the server after {time.monotonic() - started:.2f}s ({e.reason})")

links.shutdown()
print("done")
