"""A connection's life follows the table in ``links._state``: every move the engine makes is
one the table allows, in the order a user would expect, and any other move is refused."""

from __future__ import annotations

import pytest

import links
from links._connection import Connection
from links._state import TRANSITIONS, ConnState

WAIT = 5.0
S = ConnState


class Json(links.Protocol):
    framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
    messenger = links.JsonMessenger()


@pytest.fixture
def moves(monkeypatch):
    """Every (connection, from, to) the engine moves through, in order."""
    seen: list[tuple[int, ConnState, ConnState]] = []
    move = Connection._move

    def recording(self, state):
        before = self.state
        move(self, state)
        if state is not before:
            seen.append((id(self), before, state))

    monkeypatch.setattr(Connection, "_move", recording)
    return seen


def path(moves, con) -> list[ConnState]:
    mine = [(a, b) for who, a, b in moves if who == id(con)]
    return [mine[0][0]] + [b for _, b in mine] if mine else []


def test_the_table_has_every_state_and_closed_is_final():
    assert set(TRANSITIONS) == set(ConnState)
    assert TRANSITIONS[S.CLOSED] == frozenset()
    assert all(S.CLOSING in TRANSITIONS[s] for s in ConnState if s not in (S.CLOSING, S.CLOSED))


@pytest.mark.timeout(20)
def test_a_local_close_goes_through_closing(timer, poll, moves):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll) as svc:
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, poll_handler=poll)
        clt.close()
        assert path(moves, clt._con) == [S.OPENING, S.HANDSHAKING, S.CONNECTED, S.CLOSING, S.CLOSED]


@pytest.mark.timeout(20)
def test_a_lost_connection_detaches_then_redials(timer, poll, moves):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll) as svc:
        clt = links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, poll_handler=poll,
            reconnect=links.Backoff(initial=0.01, maximum=0.05),
        )  # fmt: skip
        con = clt._con
        with clt.into_sender_with_spawned_recver():  # the poll thread sees the peer go
            first = svc.accept(timeout=WAIT)
            first.close()  # the peer goes: the client detaches and redials
            second = svc.accept(timeout=WAIT)
            assert second is not None
            with con.changed:
                assert con.changed.wait_for(lambda: con.state is S.CONNECTED, WAIT)
            second.close()
        assert path(moves, con)[:6] == [S.OPENING, S.HANDSHAKING, S.CONNECTED, S.DETACHED, S.HANDSHAKING, S.CONNECTED]
        assert path(moves, con)[-2:] == [S.CLOSING, S.CLOSED]
        for _, before, after in moves:
            assert after in TRANSITIONS[before]


def test_a_move_the_table_does_not_allow_is_refused(timer, poll):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll) as svc:
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timer=timer, poll_handler=poll)
        clt.close()
        with pytest.raises(RuntimeError, match="no transition from closed to connected"):
            clt._con._move(S.CONNECTED)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("resumable", [False, True], ids=["plain", "session"])
def test_hooks_get_one_handle_type_in_every_mode(timer, poll, resumable):
    from links.session import Resumable

    handles = []

    class Seen(Json):
        def on_connect(self, con):
            handles.append(con)

    session = {"session": Resumable()} if resumable else {}
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer, poll_handler=poll, **session) as svc:
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Seen, timer=timer, poll_handler=poll, **session)
        with clt:
            assert len(handles) == 1
            con = handles[0]
            assert isinstance(con, links.Handle)
            assert con.con_id == clt.con_id
            assert con.is_connected()
            assert con.send({"via": "handle"}) is links.SendStatus.COMPLETED
