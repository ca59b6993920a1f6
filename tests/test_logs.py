"""The structured log events are a contract: names and fields users filter and alert on.

Each test drives a real scenario under ``structlog.testing.capture_logs()`` and checks the
events it must produce with the fields documented for them. Events logged on the poll or
timer thread are awaited through a processor that notifies a condition, never by polling.
"""

from __future__ import annotations

import socket
import struct

import pytest
from helpers import watch_logs

import links

WAIT = 5.0


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1024)
    messenger = links.JsonMessenger()


def server_id(svc: links.Svc, client_local) -> str:
    return str(links.ConId(links.Role.ACCEPTOR, svc.name, svc.local_addr, client_local))


def test_connection_lifecycle_events(timer, poll):
    with watch_logs() as logs:
        with links.Svc.bind("127.0.0.1:0", protocol=Json, max_connections=2, timer=timer, poll_handler=poll) as svc:
            port = svc.local_addr[1]
            logs.one("svc.bound", addr=f"127.0.0.1:{port}", max_connections=2)
            svc.into_sender_with_spawned_recver()
            assert logs.wait("poll.acceptor.added", con_id=svc.name)

            client = links.Clt.connect(f"127.0.0.1:{port}", protocol=Json, timer=timer, timeout=WAIT, name="alice")
            client_id, accepted_id = str(client.con_id), server_id(svc, client.con_id.local)
            assert logs.wait("poll.recver.added", con_id=accepted_id)
            logs.one("clt.connected", con_id=client_id, role="Initiator")
            logs.one("clt.connected", con_id=accepted_id, role="Acceptor")
            logs.one("svc.accepted", con_id=accepted_id, in_use=1, max_connections=2)

            client.close()
            logs.one("clt.disconnected", con_id=client_id, reason="closed")
            assert logs.wait("poll.recver.removed", con_id=accepted_id, reason="peer_closed")
            logs.one("clt.disconnected", con_id=accepted_id, reason="peer_closed")


def test_svc_rejected(timer, poll):
    with watch_logs() as logs:
        with links.Svc.bind("127.0.0.1:0", protocol=Json, max_connections=1, timer=timer, poll_handler=poll) as svc:
            svc.into_sender_with_spawned_recver()
            target = f"127.0.0.1:{svc.local_addr[1]}"
            with links.Clt.connect(target, protocol=Json, timer=timer, timeout=WAIT) as first:
                assert logs.wait("svc.accepted", con_id=server_id(svc, first.con_id.local))
                with links.Clt.connect(target, protocol=Json, timer=timer, timeout=WAIT) as second:
                    peer = "127.0.0.1:%d" % second.con_id.local[1]
                    assert logs.wait("svc.rejected", peer=peer, max_connections=1)
    assert not [e for e in logs.entries if e["event"] == "svc.accepted" and e["con_id"].endswith(peer + ")")]


@pytest.mark.parametrize(
    ("payload", "error", "event", "fields"),
    [
        (struct.pack("!I", 5000), links.FrameTooLarge, "frame.too_large", {"size": 5004, "max_frame_size": 1024}),
        (struct.pack("!I", 3) + b"{x]", links.DecodeError, "frame.decode_failed", {}),
    ],
    ids=["too_large", "decode_failed"],
)
def test_frame_errors(timer, payload, error, event, fields):
    with watch_logs() as logs:
        with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
            with socket.create_connection(svc.local_addr) as hostile, svc.accept(timeout=WAIT) as clt:
                hostile.sendall(payload)
                with pytest.raises(error) as info:
                    clt.recv(timeout=WAIT)
    entry = logs.one(event, con_id=str(clt.con_id), **fields)
    if event == "frame.decode_failed":
        assert entry["error"] == str(info.value)
    logs.one("clt.disconnected", con_id=str(clt.con_id), reason=event)


def test_heartbeat_failed(timer):
    class Failing(Json):
        heartbeat_interval = 0.02

        def send_heartbeat(self, con):
            raise links.BrokenError("peer vanished")  # as a send on a dead link would

    with watch_logs() as logs:
        with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
            target = f"127.0.0.1:{svc.local_addr[1]}"
            with links.Clt.connect(target, protocol=Failing, timer=timer, timeout=WAIT) as clt:
                # Twice: a failed beat is logged and the task keeps running.
                entry = logs.wait("heartbeat.failed", count=2, con_id=str(clt.con_id))
                assert entry is not None and entry["error"] == "peer vanished"
            assert timer.task_count == 0  # closing ends it
