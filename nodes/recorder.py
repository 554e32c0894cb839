"""``sink.recorder``: record the raw framed TLV stream for bit-for-bit replay."""

from __future__ import annotations

import dataclasses

from alphapulse.kinds import Node, node_kind, param


@dataclasses.dataclass(frozen=True)
class RecorderParams:
    path: str = param(
        "recordings", doc="Directory for the rotating recording files; relative to the topology "
        "file.", minLength=1,
    )
    rotate_bytes: int = param(
        256 * 1024 * 1024, doc="Start a new file after this many bytes.", minimum=4096,
    )
    rotate_seconds: int = param(3600, doc="Start a new file after this many seconds.", minimum=1)
    fsync_seconds: float = param(
        1.0, doc="fsync the current file at least this often.", live=True, exclusiveMinimum=0,
    )
    keep_files: int = param(
        0, doc="Delete the oldest files beyond this many; 0 keeps everything.", live=True,
        minimum=0,
    )


@node_kind("sink.recorder", emits=(), accepts=None,
           example={"path": "recordings/demo", "rotate_seconds": 600})
class Recorder(Node):
    """Recorder: writes frames with their headers, unchanged, to rotating files.

    ``source.replay`` plays them back bit-for-bit, so any incident can be reproduced.
    """

    Params = RecorderParams

    async def run(self, ctx):
        raise NotImplementedError("sink.recorder is implemented by issue #7")
