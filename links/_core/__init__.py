"""Sans-I/O core: framing, buffering, messengers, protocol hooks and the connection engine.

Nothing in this package touches a socket, a selector, a thread or a clock: bytes and
messages go in, bytes and messages come out, and time arrives as an argument. A test
(``tests/test_layering.py``) keeps it that way.
"""
