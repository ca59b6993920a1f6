"""Every public name says what it does: ``help()`` is enough to use it.

Walks the public API: the ``__all__`` of ``links`` and of its public subpackages, every class
there, and each public method and property of those classes (inherited ones too, where a
``links`` class defines them). Each must have a docstring, its own for a class, and not a
trivial one: a few words, a bare "See ``X``", or the signature a dataclass makes up.

A method may inherit its docstring from the ``links`` class it overrides, as ``help()`` then
shows it (``CounterCallback.on_recv`` is described by ``Callback.on_recv``).

Plain values (``MAX_FRAME_SIZE``, ``NEED_DATA``) and type aliases (``links.soupbintcp.Packet``)
cannot carry a docstring of their own; their module's docstring must name them.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator

import pytest

PUBLIC_MODULES = ["links", "links.lowlevel", "links.mux", "links.session", "links.soupbintcp", "links.testing"]

MIN_WORDS = 4  # "Close the connection." is too little to use it; say what it returns and raises
SEE_ONLY = re.compile(r"^\s*see\s+\S+\s*$", re.I)


def is_trivial(doc: str | None, owner: str = "") -> bool:
    if not doc or not doc.strip():
        return True
    text = doc.strip()
    if SEE_ONLY.match(text.rstrip(".")):
        return True
    if owner and text.startswith(f"{owner}("):  # made up by @dataclass from the fields
        return True
    if text in ("An enumeration.", "Create a collection of name/value pairs."):  # made up by Enum
        return True
    return len(text.split()) < MIN_WORDS


def defining_class(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def public_members(cls: type) -> Iterator[tuple[str, object]]:
    """Public methods and properties of ``cls`` that a ``links`` class defines."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = defining_class(cls, name)
        if owner is None or not owner.__module__.startswith("links"):
            continue  # object, Exception, Enum, Generic, typing.Protocol: not ours to document
        value = vars(owner)[name]
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            yield name, getattr(cls, name)


def api() -> Iterator[tuple[str, object, str]]:
    """(qualified name, object, kind) for every public name and member."""
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            qualified = f"{module_name}.{name}"
            if inspect.isclass(obj):
                yield qualified, obj, "class"
                for member_name, member in public_members(obj):
                    yield f"{qualified}.{member_name}", member, "member"
            elif inspect.isroutine(obj):
                yield qualified, obj, "function"
            else:
                yield qualified, module, "value"


API = list(api())


def test_the_walk_sees_the_whole_surface():
    names = {name for name, _, _ in API}
    assert {"links.Clt.send", "links.Clt.con_id", "links.Callback.on_recv", "links.soupbintcp.MAX_FRAME_SIZE",
            "links.testing.FaultProxy", "links.session.Resumable", "links.lowlevel.Link", "links.mux.Mux.open"} <= names  # fmt: skip
    assert len(API) > 300


def undocumented() -> list[str]:
    bad = []
    for qualified, obj, kind in API:
        short = qualified.rsplit(".", 1)[-1]
        if kind == "class":
            if is_trivial(vars(obj).get("__doc__"), short):
                bad.append(qualified)
        elif kind == "value":
            if not re.search(rf"\b{re.escape(short)}\b", obj.__doc__ or ""):
                bad.append(f"{qualified} (not named in its module's docstring)")
        elif is_trivial(inspect.getdoc(obj)):
            bad.append(qualified)
    return bad


def test_every_public_name_has_a_docstring_that_says_something():
    bad = undocumented()
    assert not bad, f"{len(bad)} public names without a real docstring:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize(
    ("doc", "trivial"),
    [
        (None, True),
        ("", True),
        ("See `CltSender.send`.", True),
        ("Close it.", True),
        ("Point(x: int, y: int)", True),
        ("Send ``msg``; returns ``SendStatus.COMPLETED`` or ``WOULD_BLOCK``.", False),
    ],
)
def test_what_counts_as_trivial(doc, trivial):
    assert is_trivial(doc, "Point") is trivial
