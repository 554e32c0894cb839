"""The two kinds of protocol error, kept apart as h11 does.

``RemoteProtocolError`` (and its ``MalformedFrame``) means the bytes we received are wrong: the
peer's fault, so a decoder counts it and resynchronises. ``LocalProtocolError`` means we asked
for something the protocol cannot express (a price that does not fit an i64, a 300-byte
address): our bug, so it propagates.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every wire-protocol error."""


class RemoteProtocolError(ProtocolError):
    """The input violates the protocol; nothing we did caused it."""


class MalformedFrame(RemoteProtocolError):
    """A frame, TLV or value that cannot be decoded (truncated, wrong size, bad checksum)."""


class LocalProtocolError(ProtocolError, ValueError):
    """We tried to encode something the protocol cannot carry."""
