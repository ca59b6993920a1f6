"""The errors ``links.soupbintcp`` adds to the ``links`` tree."""

from __future__ import annotations

from .._errors import LinksError
from ._packets import NOT_AUTHORIZED, SESSION_NOT_AVAILABLE

__all__ = ["REASONS", "LoginRejectedError", "NotLoggedInError"]

#: What each Login Rejected reason code means.
REASONS = {NOT_AUTHORIZED: "not authorized", SESSION_NOT_AVAILABLE: "session not available"}


class LoginRejectedError(LinksError):
    """The server answered the login with Login Rejected. ``reason`` is its code (``"A"``, ``"S"``)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        meaning = REASONS.get(reason, "unknown reason")
        super().__init__(f"login rejected: {meaning} (reason {reason!r})")


class NotLoggedInError(LinksError):
    """Sequenced Data was sent on a server connection whose client is not logged in (yet, or
    any more: a newer login of the same user replaced it). There is no stream to number it in."""
