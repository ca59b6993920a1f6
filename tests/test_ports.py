"""Ports out of range are refused by ``Svc.bind`` and ``Clt.connect``, never wrapped.

The socket layer reduces a port modulo 65536: unchecked, ``"127.0.0.1:70000"`` binds or
dials port 4464 without a word.
"""

from __future__ import annotations

import pytest
from helpers import Json

import links
from links.lowlevel import format_addr, parse_addr
from links.testing import FaultProxy


@pytest.mark.parametrize("addr", ["127.0.0.1:70000", "127.0.0.1:65536", "127.0.0.1:-1", ("127.0.0.1", 70000)])
def test_bind_refuses_a_port_out_of_range(addr, timer):
    with pytest.raises(ValueError, match="port out of range 0-65535"):
        links.Svc.bind(addr, protocol=Json, timer=timer)


@pytest.mark.parametrize("addr", ["127.0.0.1:70000", "127.0.0.1:0", "127.0.0.1:-1", ("127.0.0.1", 65536)])
def test_connect_refuses_a_port_out_of_range_or_zero(addr, timer):
    with pytest.raises(ValueError, match="port out of range 1-65535"):
        links.Clt.connect(addr, protocol=Json, timer=timer, timeout=1.0)


@pytest.mark.parametrize("addr", ["localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:--1"])
def test_an_address_without_a_numeric_port_is_refused(addr, timer):
    with pytest.raises(ValueError, match="expected 'host:port'"):
        links.Clt.connect(addr, protocol=Json, timer=timer, timeout=1.0)


def test_port_zero_still_binds(timer):
    with links.Svc.bind("127.0.0.1:0", protocol=Json, timer=timer) as svc:
        assert 0 < svc.local_addr[1] <= 65535


def test_fault_proxy_refuses_a_target_port_out_of_range():
    with pytest.raises(ValueError, match="port out of range"):
        FaultProxy("127.0.0.1:70000")


def test_the_edges_of_the_range_are_ports():
    assert parse_addr("127.0.0.1:65535") == ("127.0.0.1", 65535)
    assert parse_addr("127.0.0.1:1") == ("127.0.0.1", 1)
    assert parse_addr("[::1]:0", bind=True) == ("::1", 0)
    assert format_addr(("::1", 80)) == "[::1]:80" and parse_addr(format_addr(("::1", 80))) == ("::1", 80)
