"""Inspect the structured log events `links` emits, from a program or a test.

Every connection event is a structlog event with a stable dotted name and key/value
fields (``svc.accepted``, ``clt.connected``, ``clt.disconnected`` with a ``reason``, ...).
Two ways to look at them:

1. ``structlog.testing.capture_logs()`` collects the event dicts while a block runs
   (what tests use);
2. a processor of your own in ``structlog.configure`` sees every event as it happens
   (what a program uses, to count events or forward them somewhere).

Run: python examples/inspect_logs.py
"""

import threading
from collections import Counter
from typing import NoReturn

import structlog
from structlog.testing import capture_logs
from structlog.typing import EventDict, WrappedLogger

import links


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4)
    messenger = links.JsonMessenger()

    def __init__(self, gone: threading.Event | None = None) -> None:
        self.gone = gone

    def on_disconnect(self, con_id: links.ConId) -> None:
        if self.gone is not None:
            self.gone.set()


def one_connection(poll: links.PollHandler) -> None:
    """Start a service, connect, exchange a message, disconnect."""
    store, gone = links.StoreCallback(), threading.Event()
    with links.Svc.bind(
        "127.0.0.1:0", protocol=lambda: Json(gone), callback=store, poll_handler=poll, name="svc"
    ) as svc:
        svc.into_sender_with_spawned_recver()
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, poll_handler=poll, name="clt") as clt:
            clt.send({"hello": "world"})
            assert store.find_recv(timeout=5.0)
        # The service end notices on the poll thread that the client left; once it has,
        # sync() lets the poll thread finish that close (and its log line) first.
        assert gone.wait(5.0)
        poll.sync()
    poll.sync()  # the acceptor's removal, posted by svc.close()


# 1. capture_logs: a list of dicts, one per event, whatever the level.
with links.PollHandler("poll") as poll, capture_logs() as events:
    one_connection(poll)

print("events captured with capture_logs():")
for event in events:
    fields = {k: v for k, v in event.items() if k not in ("event", "log_level")}
    print(f"  {event['log_level']:<7} {event['event']:<22} {fields}")

# Fields are data, not text: pick out the disconnect reasons per connection.
reasons = {e["con_id"]: e["reason"] for e in events if e["event"] == "clt.disconnected"}
print("disconnect reasons:", reasons)
assert "peer_closed" in reasons.values()


# 2. A custom processor: count events by name while logging normally (here: nowhere).
counts: Counter[str] = Counter()


def count_events(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> NoReturn:
    counts[event_dict["event"]] += 1
    raise structlog.DropEvent  # this example only counts; a real program would render it


structlog.configure(processors=[count_events])
with links.PollHandler("poll") as poll:
    for _ in range(3):
        one_connection(poll)
structlog.reset_defaults()

print("event counts over three connections (custom processor):")
for name, n in sorted(counts.items()):
    print(f"  {name:<22} {n}")
assert counts["svc.accepted"] == 3 and counts["clt.disconnected"] == 6

links.shutdown()
print("done")
