"""``links.soupbintcp``: SoupBinTCP 4.0, the session layer under OUCH and other order-entry protocols.

Built from the public pieces of the core only: a 2-byte big-endian ``LengthPrefixFramer``, a
messenger that turns ``type + body`` into one frozen dataclass per packet, and protocol hooks
driven by the poll thread and the timer.

Usage
-----
::

    import links
    from links.soupbintcp import CltProtocol, SequencedData, SvcProtocol, UnsequencedData

    server = SvcProtocol(username="user", password="secret", session="DAY1",
                         reply=lambda payload: payload.upper())      # optional auto-answer
    with links.Svc.bind("127.0.0.1:0", protocol=server) as svc:
        svc_sender = svc.into_sender_with_spawned_recver()
        client = CltProtocol(username="user", password="secret")
        with links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=client) as clt:
            clt.send(UnsequencedData(b"hello"))
            clt.recv(timeout=5.0)   # LoginAccepted(session='DAY1', sequence=1), kept from connect
            clt.recv(timeout=5.0)   # SequencedData(payload=b'HELLO', sequence=1)

``CltProtocol(...)`` and ``SvcProtocol(...)`` are *configuration objects*. ``protocol=`` takes
a zero-argument factory, and calling a configuration returns a fresh per-connection
``links.Protocol``, so one configuration serves every connection of a service, or every
reconnection of a client. The server's configuration also owns the store of numbered
messages that its connections share (``SvcProtocol.store``); the client's remembers where
its newest connection is in the stream (``CltProtocol.next_sequence``).

The application sends Sequenced Data through the ordinary senders:
``svc_sender.send_to(con_id, SequencedData(b"..."))`` (the ``con_id`` comes with every message
a callback sees), ``broadcast``, or the configuration's ``reply``. The server numbers each
one as it is sent; a client numbers each one as it arrives; both show the number as
``SequencedData.sequence`` (it is not on the wire, and not part of equality). A server
connection carries Sequenced Data from the moment its callback sees the Login Request (the
protocol has accepted the login by then).

Payloads are bytes. ``payload_messenger=links.JsonMessenger()`` (on both sides) carries
application objects inside Sequenced and Unsequenced Data instead.

Both sides work in every mode of the core: a whole ``Clt``, split halves, spawned receivers,
shared ``Ref`` handles, a ``Svc`` accepting on a user thread or spawned into the poll thread,
and ``Clt.connect(..., reconnect=links.Backoff(...))``.

Guarantees
----------
* ``Clt.connect`` returns only once Login Accepted arrived; Login Rejected raises
  ``LoginRejectedError`` naming the reason (``"A"`` not authorized, ``"S"`` session not
  available); no answer within ``timeout`` raises ``links.ConnectTimeout``.
* ``is_connected()`` is True only while logged in and while something arrived from the peer
  within ``idle_timeout`` (default 15 s). A peer silent that long is disconnected at the
  next heartbeat tick, so it is detected within ``idle_timeout + heartbeat_interval``
  (``links.BrokenError``, reason ``soupbintcp.idle_timeout``; ``reconnect=`` redials).
* Liveness counts what the receiver *processed*: a client that only sends must still
  receive (spawn its receiver, or call ``recv``), or the server's heartbeats pile up unread
  and the client declares the server dead after ``idle_timeout``.
* Each side sends a heartbeat when it sent nothing for ``heartbeat_interval`` (default 1 s),
  checked once per interval, so the line is never silent for two intervals.
* Within one connection, Sequenced Data arrives in order and numbered without holes: the
  replay at login goes out, with Login Accepted, before any live message can, and a
  numbered message that could not be written (``WOULD_BLOCK``) ends the connection under
  the same write lock (``soupbintcp.sequence_gap``) rather than shift later numbers.
* Across connections of one ``CltProtocol`` (``reconnect=``, or connecting again with it),
  the stream resumes after the last message received: nothing is missed or repeated as long
  as the server still keeps it, and a login asking for more than it keeps is refused.
* Bytes a peer should not send (an unknown type, a length that disagrees with the type, a
  malformed field, a packet of the other direction, data before login, a second login)
  close that connection, logged as ``frame.decode_failed`` (``frame.too_large`` for an
  oversize length), and never reach the protocol or the callbacks; nothing else is
  disturbed.
* A server connection that does not log in within ``login_timeout`` (default 5 s) is closed
  by a timer task; the poll thread never waits for a login.
* ``close()`` on a logged-in client sends Logout Request first; closing a service (or one of
  its connections) sends End of Session to each logged-in client first. End of Session (and
  Login Rejected) closes the client for good: later calls raise ``links.ClosedError`` and
  ``reconnect=`` does not redial.
* The server's ``authenticate`` and ``reply`` run on the receiving thread (the poll thread
  when spawned): keep them quick. The Login Accepted + replay write also happens there; a
  client that asks for a long replay and then stops reading holds that thread up to the
  transport's stall timeout, so keep ``max_messages`` proportionate.

Store and replay policy
-----------------------
* One numbered stream per username, numbered from 1, inside the server's one session: as in
  OUCH, each account has its own stream, and the ordinary senders reach one connection at a
  time (a stream shared between users would have holes for each of them).
* A user is logged in on one connection at a time: a newer login replaces the older
  connection, which gets End of Session and is closed (``soupbintcp.replaced``), so a client
  reconnecting after a network cut never waits for the server to notice the dead one.
* Each stream keeps its newest ``max_messages`` (default 100 000) in memory, nothing on disk:
  streams die with the process.
* Login sequence number 0 means "from the current end" (no replay). A number the store
  still holds replays from there. A number beyond the end starts at the end (Login Accepted
  says which number comes next). A number older than the oldest kept is rejected with
  ``"S"`` (session not available): starting later would silently misnumber the client.
* Sending Sequenced Data on a connection that is not logged in (yet, or any more) raises
  ``NotLoggedInError``: there is no stream to number it in.

Names
-----
``Packet`` is the union of the ten packet classes (``decode_packet`` returns one,
``encode_packet`` takes one). ``NOT_AUTHORIZED`` (``"A"``) and ``SESSION_NOT_AVAILABLE``
(``"S"``) are the reject codes of ``LoginRejected.reason``. ``MAX_FRAME_SIZE`` is the largest
frame SoupBinTCP can carry (a 2-byte length plus up to 65,535 bytes), the default
``max_frame_size`` of both protocols.

Log events
----------
Logger ``links.soupbintcp``, each event bound to ``con_id``:

=================================== ======= ==================================================
event                               side    fields
=================================== ======= ==================================================
``soupbintcp.login_accepted``       both    session, sequence (server adds username, replayed)
``soupbintcp.login_rejected``       both    reason (server adds username, why; client error)
``soupbintcp.login_timeout``        server  login_timeout
``soupbintcp.idle_timeout``         both    idle, idle_timeout
``soupbintcp.logout``               server  username
``soupbintcp.end_of_session``       client
``soupbintcp.replaced``             server  username, by (the newer connection)
``soupbintcp.sequence_gap``         server  sequence
``soupbintcp.authenticate_failed``  server  username, error (``authenticate`` raised: rejected)
``soupbintcp.reply_dropped``        server  error (the connection ended before the reply)
=================================== ======= ==================================================

A connection the protocol drops because of the peer closes with that event's name as the
reason, in the core's ``clt.disconnected`` event and in the ``links.BrokenError`` later calls
raise: ``soupbintcp.idle_timeout``, ``soupbintcp.login_timeout``, ``soupbintcp.logout``,
``soupbintcp.login_rejected`` (server side), ``soupbintcp.sequence_gap``.
"""

from ._client import MAX_FRAME_SIZE as MAX_FRAME_SIZE, CltProtocol as CltProtocol
from ._errors import LoginRejectedError as LoginRejectedError, NotLoggedInError as NotLoggedInError
from ._messenger import SoupBinTcpMessenger as SoupBinTcpMessenger, State as State
from ._packets import (
    NOT_AUTHORIZED as NOT_AUTHORIZED,
    SESSION_NOT_AVAILABLE as SESSION_NOT_AVAILABLE,
    ClientHeartbeat as ClientHeartbeat,
    Debug as Debug,
    EndOfSession as EndOfSession,
    LoginAccepted as LoginAccepted,
    LoginRejected as LoginRejected,
    LoginRequest as LoginRequest,
    LogoutRequest as LogoutRequest,
    Packet as Packet,
    SequencedData as SequencedData,
    ServerHeartbeat as ServerHeartbeat,
    UnsequencedData as UnsequencedData,
    decode_packet as decode_packet,
    encode_packet as encode_packet,
)
from ._server import SvcProtocol as SvcProtocol
from ._session import SessionStore as SessionStore

__all__ = [
    "MAX_FRAME_SIZE", "NOT_AUTHORIZED", "SESSION_NOT_AVAILABLE", "ClientHeartbeat", "CltProtocol", "Debug",
    "EndOfSession", "LoginAccepted", "LoginRejected", "LoginRejectedError", "LoginRequest", "LogoutRequest",
    "NotLoggedInError", "Packet", "SequencedData", "ServerHeartbeat", "SessionStore", "SoupBinTcpMessenger",
    "State", "SvcProtocol", "UnsequencedData", "decode_packet", "encode_packet",
]  # fmt: skip
