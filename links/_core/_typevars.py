"""The message type variables of the generic base classes users subclass (``Protocol``,
``Messenger``).

Both default to ``Any`` (PEP 696): ``class Chat(links.Protocol)`` means
``links.Protocol[Any, Any]`` and passes ``mypy --strict`` as written, while
``links.Protocol[Order, Fill]`` checks the hooks' messages precisely. ``typing.TypeVar`` takes
``default=`` only from Python 3.13, so type checkers read it from ``typing_extensions`` (which
they bundle) and run time gets a plain ``TypeVar``: links needs no dependency for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["SendT", "RecvT"]

if TYPE_CHECKING:
    from typing_extensions import TypeVar

    SendT = TypeVar("SendT", default=Any)
    RecvT = TypeVar("RecvT", default=Any)
else:
    from typing import TypeVar

    SendT = TypeVar("SendT")
    RecvT = TypeVar("RecvT")
