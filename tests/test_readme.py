"""The README's code runs as written (documentation that cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_every_python_block_runs_in_order_and_prints_what_it_says(capsys):
    namespace: dict = {}
    blocks = python_blocks()
    assert len(blocks) == 6  # the tour, sessions, request/response, SoupBinTCP, asyncio, rpc from asyncio
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md (python block {i + 1})", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "{'hi': 'back'}"
    assert printed[1] == "{'n': 2}"
    assert printed[2:5] == ["5", "ABC", "NoSuchMethod no method 'divide'"]
    assert printed[5].startswith("LoginAccepted(")
    assert printed[6].startswith("SequencedData(") and "b'hello'" in printed[6]
    assert printed[7] == "{'echo': 'HELLO'}"
    assert printed[8] == "{'to': 'all'}"
    assert printed[9:12] == ["6", "['A', 'B']", "timed out"]
