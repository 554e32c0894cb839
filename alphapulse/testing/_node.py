"""Run one node kind in-process under the real NodeHost and read what it publishes.

The node gets a real publisher (Unix socket) and control socket; the output is read by a real
:class:`alphapulse.runtime.InputLink` (sequence-checked), decoded into records. The node's own
``run`` starts only once that subscriber is connected, so nothing it publishes first (its
InstrumentMappings) is missed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import trio

from alphapulse import protocol

__all__ = ["NodeRun", "Published", "run_node"]


@dataclasses.dataclass(frozen=True)
class Published:
    """One message the node published: its header and its TLVs as records."""

    header: protocol.Header
    tlvs: list[Any]


class NodeRun:
    """A node running in-process; ``messages`` fills as its output arrives."""

    def __init__(self, host: Any, link: Any) -> None:
        self.host = host
        self.link = link
        self.messages: list[Published] = []
        self._changed = trio.Event()

    @property
    def node(self) -> Any:
        """The kind instance (its ``feed``, ``statistics()``...)."""
        return self.host.instance

    @property
    def ctx(self) -> Any:
        return self.host.ctx

    def records(self, *types: type) -> list[Any]:
        """Every published TLV record, in order; only of ``types`` if given."""
        out = [t for m in self.messages for t in m.tlvs]
        return [t for t in out if isinstance(t, types)] if types else out

    def stats(self) -> dict[str, Any]:
        """What ``alphapulse status`` would show for the node (its control ``stats`` answer)."""
        return self.host.stats()

    async def wait_for(self, predicate: Callable[[NodeRun], bool], timeout: float = 10.0, what: str = "") -> None:
        """Wait until ``predicate(self)`` holds (checked on every delivery and every 50 ms)."""
        with trio.fail_after(timeout):
            while not predicate(self):
                with trio.move_on_after(0.05):
                    await self._changed.wait()
                self._changed = trio.Event()
        del what  # named in the caller's assertion message on timeout

    async def _deliver(self, block: Any) -> None:
        placeholders = getattr(block, "is_placeholder", None)
        if placeholders is not None and placeholders.any():
            block = block.select(~placeholders)
        for frame in block.frames():
            message = protocol.decode_message(frame)
            self.messages.append(Published(message.header, message.tlvs))
        self._changed.set()


@contextlib.asynccontextmanager
async def run_node(
    kind: str,
    params: Mapping[str, Any],
    *,
    name: str = "node",
    source_id: int = 7,
    subscriber: str = "test",
    plan_extra: Mapping[str, Any] | None = None,
) -> AsyncIterator[NodeRun]:
    """Run ``kind`` with ``params`` under a real NodeHost until the block exits.

    Yields a :class:`NodeRun` whose ``messages`` receive everything the node publishes, read
    through a real InputLink on the node's publisher socket.
    """
    from alphapulse.runtime import InputLink, InputSpec, NodeHost

    with tempfile.TemporaryDirectory(prefix="apn", dir="/tmp") as tmp:  # sun_path is short
        sockets = {"data": os.path.join(tmp, "d.sock"), "control": os.path.join(tmp, "c.sock")}
        node = {
            "kind": kind,
            "params": dict(params),
            "source_id": source_id,
            "sockets": sockets,
            **dict(plan_extra or {}),
        }
        host = NodeHost({"nodes": {name: node}}, name)
        link = InputLink(InputSpec(node=name, socket=sockets["data"], queue=1 << 20), subscriber_name=subscriber)
        run = NodeRun(host, link)
        subscribed = trio.Event()
        original_run = host.instance.run

        async def gated_run(ctx: Any) -> None:
            await subscribed.wait()
            await original_run(ctx)

        host.instance.run = gated_run
        async with trio.open_nursery() as nursery:
            await nursery.start(host.run)
            nursery.start_soon(link.run, run._deliver)
            with trio.fail_after(10):
                while not any(s.name == subscriber for s in host.ctx._publisher.statistics().subscribers):
                    await trio.sleep(0.005)
            subscribed.set()
            try:
                yield run
            finally:
                host.stop()
                nursery.cancel_scope.cancel()
