"""Interpreter exit ends every wait in links (``links._exit``).

Python joins non-daemon threads before ``atexit`` hooks run, so a user thread blocked on a
silent peer used to keep the interpreter alive for ever. Each test runs a small program as a
user would, in a subprocess, whose main thread ends while another thread waits in links; the
program must exit on its own, promptly, and the waiting thread must get an error, not hang.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

EXIT_LIMIT = 30.0  # generous: a hang is what is tested, not speed

PRELUDE = textwrap.dedent(
    """
    import socket, sys, threading
    import structlog
    import links

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout: the program's

    class Json(links.Protocol):
        framer = links.LengthPrefixFramer(header_size=4, max_frame_size=1 << 16)
        messenger = links.JsonMessenger()

    def wait_in(name, call):
        def body():
            try:
                call()
            except links.LinksError as e:
                sys.stdout.write(f"{name} ended: {type(e).__name__}\\n")  # one write: threads print at once
        threading.Thread(target=body, name=name).start()  # not a daemon: Python joins it
    """
)


def run(program: str, tmp_path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "program.py"
    script.write_text(PRELUDE + textwrap.dedent(program))
    try:
        return subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=EXIT_LIMIT
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the program did not exit within {EXIT_LIMIT}s; it printed {e.stdout!r}")


@pytest.mark.timeout(60)
def test_a_thread_in_recv_on_a_silent_peer_does_not_keep_the_interpreter_alive(tmp_path):
    done = run(
        """
        silent = socket.create_server(("127.0.0.1", 0))
        clt = links.Clt.connect(f"127.0.0.1:{silent.getsockname()[1]}", protocol=Json, timeout=5)
        peer, _ = silent.accept()  # accepted, and never a byte sent
        wait_in("reader", clt.recv)
        print("main done", flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main done", "reader ended: ClosedError"]
    assert "reason=interpreter_exit" in done.stderr  # the log says why it closed


@pytest.mark.timeout(60)
def test_a_thread_in_recv_on_a_channel_is_closed_at_exit_before_its_connection(tmp_path):
    # Channels are closed at exit through their connection's driver (links.mux._channel), and
    # before any connection: the channel's close is local (ClosedError), not the connection lost.
    done = run(
        """
        import links.mux

        silent = socket.create_server(("127.0.0.1", 0))  # the peer: accepts, never a byte back
        mux = links.mux.connect(f"127.0.0.1:{silent.getsockname()[1]}", timeout=5)
        peer, _ = silent.accept()
        channel = mux.open(protocol=Json, timeout=5)  # opening waits for no answer
        wait_in("reader", channel.recv)
        print("main done", flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main done", "reader ended: ClosedError"]
    assert "mux#1" in done.stderr and "reason=interpreter_exit" in done.stderr


@pytest.mark.timeout(60)
def test_a_thread_waiting_to_send_through_a_redial_does_not_keep_the_interpreter_alive(tmp_path):
    done = run(
        """
        svc = links.Svc.bind("127.0.0.1:0", protocol=Json)
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(
            f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timeout=5,
            reconnect=links.Backoff(initial=0.05, maximum=0.2),
        )
        svc.close()  # gone for good: the client redials, and a send waits for it
        wait_in("sender", lambda: [clt.send({"n": i}, timeout=None) for i in range(10**9)])
        wait_in("reader", clt.recv)
        print("main done", flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["main done", "reader ended: ClosedError", "sender ended: ClosedError"]


@pytest.mark.timeout(60)
def test_a_session_client_in_recv_says_goodbye_at_exit(tmp_path):
    done = run(
        """
        from links.session import Resumable
        svc = links.Svc.bind("127.0.0.1:0", protocol=Json, session=Resumable())
        svc.into_sender_with_spawned_recver()
        clt = links.Clt.connect(f"127.0.0.1:{svc.local_addr[1]}", protocol=Json, timeout=5, session=Resumable())
        wait_in("reader", clt.recv)
        print("main done", flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    # Both ends close at exit: the reader sees its own close, or the server's BYE first.
    assert done.stdout.splitlines() in (
        ["main done", "reader ended: ClosedError"], ["main done", "reader ended: BrokenError"]
    )
    assert "session.ended" in done.stderr


@pytest.mark.timeout(60)
def test_a_thread_in_accept_does_not_keep_the_interpreter_alive(tmp_path):
    done = run(
        """
        svc = links.Svc.bind("127.0.0.1:0", protocol=Json)
        wait_in("acceptor", svc.accept)
        print("main done", flush=True)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["main done", "acceptor ended: ClosedError"]
    assert "svc.closed" in done.stderr
