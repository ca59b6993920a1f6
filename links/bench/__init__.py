"""The benchmark harness behind ``links bench`` and ``benchmarks/system/vs_peers.py``.

Workloads W1-W4 (4-byte length-prefixed frames on 127.0.0.1):

* W1 one-way: 200,000 x 100 B from one client; msgs/s.
* W2 ping-pong: 20,000 x 100 B round trips; p50 and p99 in µs.
* W3 one-way large: 200 x 1 MiB from one client; MB/s (10^6 bytes).
* W4 fan-in: 100 clients x 1,000 x 100 B into one server; msgs/s.

(sizes at scale 1). Every measurement is a server and a client process, pinned to CPUs,
driven over their stdin/stdout and checked end to end (``_measure``); a run interleaves
rounds and reduces them to medians and links / peer ratios (``_run``). links and plain
blocking sockets are built in (``_links``, ``_plain``); other implementations live outside
the package and are registered by passing ``Impl(name, "/path/to/peer.py")`` to ``run``. A
peer module defines ``serve(ctl, params)`` and ``client(ctl, params, port)`` with the helpers
re-exported here from ``_child``. ``python_command`` starts each child so that it imports the
same ``links`` as the harness, whatever the current directory holds.

Over TLS (``run(..., tls=DIRECTORY)``, ``benchmarks/system/vs_peers.py --tls``) every connection
carries one pinned suite, with certificates made at run time (``_tls``: ``make_certificates``,
``tls_server_context``, ``tls_client_context``, ``tls_files`` for peers that are not built on
the standard library's ``ssl``).

Over channels (``run(..., mux=True)``, ``benchmarks/system/mux.py``) links' connections are
channels of one TCP connection (``links.mux``), in ``MUX_VARIANTS``, each against the same
variant over TCP connections of its own (``LINKS_TCP``). ``measure`` runs one server/client
pair of any ``Impl`` with given ``Params``, for workloads a script defines beside W1-W4.

The scripts in ``benchmarks/`` build on the same names, plus what they share beyond the
harness (``_scripts``): ``quiet_logs``, the ``Raw`` and ``RawEcho`` protocols of the workloads,
``let_go`` to end a client's channels without cutting them short,
``timed`` and ``ratio_table`` for the micro-benchmarks' loops and tables, and ``loopback_pair``
to hand ``Clt.from_socket`` a connected socket. They use nothing else of links but its public API.

This is a tool, not part of the messaging API: nothing in ``links`` imports it.
"""

from ._child import (
    HEADER as HEADER,
    HOST as HOST,
    MAX_FRAME as MAX_FRAME,
    Control as Control,
    Go as Go,
    Params as Params,
    Tally as Tally,
    payload as payload,
    percentile as percentile,
    read_frames as read_frames,
    recv_exact as recv_exact,
    rtt_result as rtt_result,
    run_senders as run_senders,
)
from ._links import Raw as Raw, RawEcho as RawEcho, let_go as let_go, round_robin as round_robin
from ._python import python_command as python_command
from ._measure import (
    LINKS as LINKS,
    LINKS_TCP as LINKS_TCP,
    MUX_VARIANTS as MUX_VARIANTS,
    PLAIN as PLAIN,
    WORKLOADS as WORKLOADS,
    Impl as Impl,
    measure as measure,
    workload_params as workload_params,
)
from ._run import (
    CELLS_NOTE as CELLS_NOTE,
    Results as Results,
    Step as Step,
    describe_pins as describe_pins,
    describe_record as describe_record,
    machine as machine,
    pinning as pinning,
    placements as placements,
    render_table as render_table,
    run as run,
    summarize as summarize,
)
from ._scripts import loopback_pair as loopback_pair, quiet_logs as quiet_logs, ratio_table as ratio_table, timed as timed
from ._tls import (
    TLS_CIPHER as TLS_CIPHER,
    TLS_SERVER_NAME as TLS_SERVER_NAME,
    TLS_VERSION as TLS_VERSION,
    make_certificates as make_certificates,
    tls_client_context as tls_client_context,
    tls_files as tls_files,
    tls_server_context as tls_server_context,
)

__all__ = [
    "CELLS_NOTE", "HEADER", "HOST", "LINKS", "LINKS_TCP", "MAX_FRAME", "MUX_VARIANTS", "PLAIN", "TLS_CIPHER", "TLS_SERVER_NAME", "TLS_VERSION", "WORKLOADS",
    "Control", "Go", "Impl", "Params", "Raw", "RawEcho", "Results", "Step", "Tally",
    "describe_pins", "describe_record", "let_go", "loopback_pair", "machine", "make_certificates", "measure", "payload", "percentile",
    "pinning", "placements",
    "python_command", "quiet_logs", "ratio_table", "read_frames", "recv_exact", "render_table", "round_robin",
    "rtt_result", "run", "run_senders", "summarize", "timed", "tls_client_context", "tls_files", "tls_server_context",
    "workload_params",
]  # fmt: skip
