"""The node host: runs one plan node as one trio process.

``alphapulse node --plan PLAN NAME`` lands here. One root nursery holds the control socket, the
publisher (for nodes with an output), one task per input link, a once-a-second sampler of rates
and CPU/memory use (which also logs drops and errors, ``_trouble``), and the kind's own ``run``.
The node is ready once its sockets are bound. SIGTERM cancels the root scope; the kind's
``aclose`` and the final flush run shielded under a deadline shorter than supervisord's
``stopwaitsecs``, so a stop drains, flushes and closes instead of being killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

import jsonschema
import numpy as np
import trio

from alphapulse.kinds import Role, build_params, get_kind, live_fields, params_to_plain
from alphapulse.protocol import HEADER_SIZE, FrameBlock
from alphapulse.runtime._breaker import BreakerSettings, BreakerState
from alphapulse.runtime._code import LoadedCode, display_path, package_root
from alphapulse.runtime._context import NodeContext
from alphapulse.runtime._control import serve_control
from alphapulse.runtime._cpu import CpuPlacement, CpuSettings
from alphapulse.runtime._crashloop import CrashLoop, CrashPolicy
from alphapulse.runtime._failure import FAILED
from alphapulse.runtime._failure import describe as describe_failure
from alphapulse.runtime._forward import DirectForwarder
from alphapulse.runtime._forward import enabled as forwarding_enabled
from alphapulse.runtime._heap import PauseMonitor, freeze_heap, freeze_more
from alphapulse.runtime._input import SMALL_READ, Backoff, InputLink, InputSpec
from alphapulse.runtime._orphan import end_with_supervisor
from alphapulse.runtime._peers import NO_PEERS, introduction
from alphapulse.runtime._publisher import Overflow, open_publisher
from alphapulse.runtime._trouble import TroubleLog, trouble_counters
from alphapulse.runtime._trouble import describe as describe_trouble
from alphapulse.runtime._usage import UsageSampler
from alphapulse.runtime._warm import load_hot_kernels, load_kind_kernels
from alphapulse.runtime._watchdog import DEFAULT_SECONDS, Watchdog
from alphapulse.topology import RETRANSMIT_BUFFER_DEFAULT, UnsetVariable, interpolate, state_file

RATE_INTERVAL = 1.0
_NO_FRAMES = FrameBlock(b"", np.empty(0, np.int64), np.empty(0, np.int64))
"""What a one-frame placeholder block leaves for the kind's handler: no frames (it is skipped)."""


class NodeConfigError(RuntimeError):
    """The plan entry cannot be run (unknown kind, missing secret, bad params)."""


def resolve_params(node: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The node's params with secrets read from the environment (the plan keeps only their
    ``${VAR}`` / ``${VAR:-default}`` templates, never the values)."""
    params = dict(node.get("params", {}))
    for field, variable in node.get("secret_env", {}).items():
        template = params.get(field)
        try:
            params[field] = interpolate(template if isinstance(template, str) else f"${{{variable}}}", environ)
        except UnsetVariable:
            raise NodeConfigError(
                f"parameter {field!r} needs environment variable {variable} (it is not set; "
                f"export it and run `alphapulse apply` again)"
            ) from None
    return params


@dataclasses.dataclass
class _Rates:
    last_in: int = 0
    last_out: int = 0
    per_second_in: float = 0.0
    per_second_out: float = 0.0


class NodeHost:
    def __init__(self, plan: Mapping[str, Any], name: str) -> None:
        try:
            self.node = plan["nodes"][name]
        except KeyError:
            raise NodeConfigError(f"plan has no node {name!r}") from None
        self.plan = plan
        self.name = name
        self.spec = get_kind(self.node["kind"], self.node.get("module"))
        self.log = logging.getLogger(f"alphapulse.node.{name}")
        raw = resolve_params(self.node)
        try:
            jsonschema.validate(raw, self.spec.params_schema())
        except jsonschema.ValidationError as exc:
            raise NodeConfigError(f"params of {name}: {exc.message}") from None
        self.params = build_params(self.spec.params_type, raw)
        self.instance = self.spec.factory(self.params)
        breaker = self.node.get("breaker", {})
        self.ctx = NodeContext(
            name=name,
            kind=self.spec.name,
            source_id=int(self.node["source_id"]),
            relay_domain=int(self.node.get("relay_domain", 1)),
            log=self.log,
            breaker_settings=BreakerSettings(**breaker),
        )
        self.ctx.plan = plan
        self.handler_breaker = self.ctx.breaker("handler")
        self.passthrough_on_open = bool(getattr(self.instance, "breaker_passthrough", False))
        self.keeps_placeholders = bool(getattr(self.instance, "keeps_placeholders", False))
        self.started = time.monotonic()
        own = getattr(self.params, "retransmit_buffer", None)  # a relay's param
        self.retransmit_capacity = int(own if own is not None
                                       else self.node.get("retransmit_buffer", RETRANSMIT_BUFFER_DEFAULT))
        """messages the publisher keeps for resends: a relay's param, else the node's own setting"""
        introduces = getattr(self.instance, "introduces_peers", None)  # a relay kind's: True or False
        self.introduces_peers = bool(introduces)
        """a relay with ``delivery: peer``: its subscribers get introductions to its inputs, and
        it subscribes to none of them itself (``runtime._peers``)"""
        specs = [InputSpec.from_plan(entry) for entry in self.node.get("inputs", [])]
        self.introduction: list[Any] = []
        if introduces is not None:  # a routing relay says so (NO_PEERS): subscribers switched back drop peers
            self.introduction = introduction(specs) if introduces else [NO_PEERS]
        self.links = [] if self.introduces_peers else [
            InputLink(
                spec,
                subscriber_name=name,
                backoff=Backoff(initial=float(self.node.get("restart", {}).get("backoff_seconds", 0.1))),
            )
            for spec in specs
        ]
        self.ctx._inputs = self.links
        self.rates = _Rates()
        self.usage = UsageSampler()
        """CPU cores and resident memory, sampled with the rates"""
        self.trouble = TroubleLog()
        """drops and errors to the log, at most a line per interval"""
        self.received = 0
        self._stop_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._deliver: Any = None
        self._attached: dict[str, tuple[trio.CancelScope, InputLink]] = {}
        self.gc_pauses = PauseMonitor()
        self.freeze_heap_once_running = False
        """set by the process entry point: a node process freezes its heap again a second in"""
        self.watchdog: Watchdog | None = None
        """set by a node process (``_run_node``), never by a test's in-process host: the timer is process-wide"""
        self.loaded_code: LoadedCode | None = None
        """the module files this process loaded (set by a node process once its imports are
        done; a host run inside another program answers ``code`` with ``tracked: false``)"""
        self._code_check = trio.CapacityLimiter(1)
        self.cpu = CpuPlacement()
        """this process's scheduling (the plan's ``cpu`` block): applied by the process entry
        point and by a live ``reconfigure``, never by a host built inside another process"""

    def apply_cpu(self, entry: Mapping[str, Any] | None) -> list[str]:
        """Set this process's policy, nice and affinity; what cannot be set is logged and counted."""
        problems = self.cpu.apply(CpuSettings.from_plan(entry))
        for problem in problems:
            self.log.error("node %s cpu: %s", self.name, problem)
        if problems:
            self.ctx.counters["errors.cpu"] += len(problems)
        return problems

    # -- running ----------------------------------------------------------------------------------
    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        sockets = self.node["sockets"]
        async with contextlib.AsyncExitStack() as stack:
            nursery = await stack.enter_async_context(trio.open_nursery())
            self._stop_scope = nursery.cancel_scope
            await nursery.start(serve_control, sockets["control"], self._control_handlers())
            if self.spec.role.has_output:
                self.ctx._publisher = await stack.enter_async_context(
                    open_publisher(
                        sockets["data"],
                        source_id=self.ctx.source_id,
                        retransmit_capacity=self.retransmit_capacity,
                        on_control=self._on_request,
                        introduction=self.introduction,
                    )
                )
            if self.spec.role is Role.RELAY and not self.introduces_peers:
                self.ctx._publisher.pass_upstream = self._pass_resend_upstream
            deliver = self._deliver_direct if hasattr(self.instance, "handle_block") else None
            if deliver is None and self.links:
                send, receive = trio.open_memory_channel(64)
                self.ctx._receive_blocks = receive

                async def deliver(block: Any, _send=send) -> None:
                    block = self._without_placeholders(block)
                    if len(block):
                        self.received += len(block)
                        await _send.send(block)

            self._nursery, self._deliver = nursery, deliver
            self._resume_inputs()
            for link in self.links:
                nursery.start_soon(self._run_link, link)
            nursery.start_soon(self._sample_rates)
            nursery.start_soon(self._watch_signals)
            self.log.info("node %s (%s) ready: source id %d, epoch %d", self.name, self.spec.name,
                          self.ctx.source_id, self.ctx.epoch)
            task_status.started(self)
            try:
                await self.instance.run(self.ctx)
                self.log.info("node %s: run() finished", self.name)
            finally:
                if self.watchdog is not None:
                    self.watchdog.disarm()  # a drain is bounded by stopwaitsecs, not by the watchdog
                with trio.CancelScope(shield=True), trio.move_on_after(self._close_budget()):
                    await self._close()
            nursery.cancel_scope.cancel()

    async def _run_link(self, link: InputLink) -> None:
        if self.spec.role is Role.RELAY and self.ctx.has_output:
            link.pass_resends_upstream(self.ctx._publisher.resend_to, self.ctx._publisher.tell)
        direct = self._deliver == self._deliver_direct
        if direct and getattr(self.instance, "forwards_verbatim", False) and forwarding_enabled():
            link.forwarder = DirectForwarder(
                self.ctx._publisher, self.ctx.relay_domain, read_size=SMALL_READ,
                on_forwarded=self._forwarded, allowed=self._handler_breaker_closed,
            )
        await link.run(self._deliver, self._on_upstream_control,
                       deliver_now=self._deliver_now if direct else None,
                       wait_ready=self._wait_ready if direct else None)

    def _pass_resend_upstream(self, subscriber: Any, request: Any) -> bool:
        """A relay's buffer cannot answer a subscriber's resend (it restarted since, or the range
        is older than it holds): ask the link the source comes over (``runtime._chain``)."""
        for link in [*self.links, *(link for _, link in self._attached.values())]:
            if link.chain_resend(subscriber, request.source, request.first_sequence, request.last_sequence):
                return True
        return False

    def stop(self) -> None:
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    def _close_budget(self) -> float:
        return max(0.5, float(self.node.get("restart", {}).get("stopwaitsecs", 10)) - 1.0)

    async def _close(self) -> None:
        aclose = getattr(self.instance, "aclose", None)
        if aclose is not None:
            await aclose(self.ctx)
        if self.ctx.has_output:
            self.ctx.flush_nowait()
            await self._drain_subscribers()

    async def _drain_subscribers(self) -> None:
        publisher = self.ctx._publisher
        while any(sub.queued for sub in publisher._subscribers if not sub.closed):
            await trio.sleep(0.01)

    def _without_placeholders(self, block: Any) -> Any:
        """Placeholders (filtered-out frames) have done their job once sequences are tracked.
        A relay passes them on, so its own subscribers can track the sources too, and so does a
        kind that sets ``keeps_placeholders`` (the recorder: a replay then has no false gaps)."""
        if self.spec.role is Role.RELAY or self.keeps_placeholders:
            return block
        if block.count == 1:  # most blocks in a trickle: no array work for one frame
            return _NO_FRAMES if int(block.sizes[0]) == HEADER_SIZE else block
        placeholders = block.is_placeholder
        return block.select(~placeholders) if placeholders.any() else block

    async def _deliver_direct(self, block: Any) -> None:
        """Push path: call the kind's sync handler on the link's own task, then flush; wait only
        while a ``block`` subscriber is over its limit. No unconditional checkpoint: the input link
        yields once per read, and one more trip through trio's scheduler per block cost more than
        forwarding the block itself."""
        if not self._deliver_now(block):
            await self._wait_ready()

    async def _wait_ready(self) -> None:
        if self.ctx.has_output and self.ctx._publisher.must_wait():
            await self.ctx._publisher.wait_for_space()

    def _forwarded(self, n: int) -> None:
        """A relay's direct path sent ``n`` messages on: what ``_deliver_now`` would count."""
        self.received += n
        self.handler_breaker.record_success()

    def _handler_breaker_closed(self) -> bool:
        return self.handler_breaker.state is BreakerState.CLOSED

    def _deliver_now(self, block: Any) -> bool:
        """The handler and the flush, synchronously (also run from trio's idle lane); False when
        a ``block`` subscriber is over its limit and the link must wait before the next block."""
        block = self._without_placeholders(block)
        n = block.count
        if not n:
            return True
        self.received += n
        breaker = self.handler_breaker
        # a closed breaker needs no clock (one read costs microseconds cold, once per message)
        if breaker.state is not BreakerState.CLOSED and not breaker.allow(trio.current_time()):
            if self.passthrough_on_open and self.ctx.has_output:
                self.ctx.publish_block_nowait(block)
                self.ctx.counters["passed_through.breaker_open"] += n
            else:
                self.ctx.counters["dropped.breaker_open"] += n
            return True
        try:
            self.instance.handle_block(block, self.ctx)
        except Exception:  # the breaker exists to contain exactly this; counted and logged
            self.ctx.counters["errors.handler"] += 1
            self.log.exception("handler of %s failed on a block of %d messages", self.name, n)
            breaker.record_failure(trio.current_time())
            self.ctx._pending.clear()
            self.ctx._pending_count = 0
            return True
        breaker.record_success()
        if not self.ctx.has_output:
            return True
        self.ctx.flush_nowait()
        return not self.ctx._publisher.must_wait()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.log.info("node %s: %s, shutting down", self.name, signal.Signals(signum).name)
                self.stop()
                return

    async def _sample_rates(self) -> None:
        while True:
            if self.watchdog is not None:
                self.watchdog.kick()  # the loop came round: push the deadline on (``_watchdog``)
            await trio.sleep(RATE_INTERVAL)
            if self.freeze_heap_once_running:  # the kind's own kernels, loaded on first use: freeze them too
                self.freeze_heap_once_running = False
                freeze_more()  # no collection, no count: a pause now would land on live traffic
            sent = self._sent()
            self.rates.per_second_in = (self.received - self.rates.last_in) / RATE_INTERVAL
            self.rates.per_second_out = (sent - self.rates.last_out) / RATE_INTERVAL
            self.rates.last_in, self.rates.last_out = self.received, sent
            self.usage.sample()
            self._log_trouble()

    def _resume_inputs(self) -> None:
        """A kind that keeps what it received (a recorder's files) says where it left off
        (``resume_positions``: source -> last sequence it has); its links start from there, so
        a restart's missing stretch is a gap asked for upstream, not a silent mid-stream join."""
        resume = getattr(self.instance, "resume_positions", None)
        if resume is None or not self.links:
            return
        try:
            positions = resume()
        except Exception as exc:  # a damaged store must not keep the node from starting: join afresh
            self.ctx.counters["errors.resume"] += 1
            self.log.error("node %s cannot tell where it left off (%s); joining its sources afresh", self.name, exc)
            return
        for link in self.links:
            link.tracker.resume_from(positions)
        if positions:
            self.ctx.counters["resumed_sources"] += len(positions)
            self.log.info("node %s resumes %d sources where it left off", self.name, len(positions))

    def _log_trouble(self) -> None:
        """Drops, errors and losses since the last such line, if one is due (``_trouble``)."""
        publisher = self.ctx._publisher.statistics() if self.ctx.has_output else None
        inputs = [stats for link in self.links for stats in link.statistics().flattened()]
        grown = self.trouble.poll(time.monotonic(), trouble_counters(self.ctx.counters, inputs, publisher))
        if grown:
            self.log.warning("node %s: %s (totals in stats)", self.name, describe_trouble(grown))

    def _sent(self) -> int:
        return self.ctx._publisher.published_messages if self.ctx.has_output else 0

    # -- requests arriving in-band ---------------------------------------------------------------
    def _on_request(self, record: Any, subscriber: Any) -> None:
        from alphapulse import protocol

        if isinstance(record, protocol.SnapshotRequest):
            self._snapshot_requested(record)
        else:
            self.ctx.counters["control.unexpected"] += 1

    def _snapshot_requested(self, record: Any) -> None:
        from alphapulse import protocol

        if record.source in (0, self.ctx.source_id) and hasattr(self.instance, "snapshot"):
            self.ctx.counters["snapshots.sent"] += 1
            tlvs = list(self.instance.snapshot(record.instrument_id))
            self.log.info("node %s: snapshot asked for (instrument %d): %d records sent", self.name,
                          record.instrument_id, len(tlvs))
            self.ctx.messages(tlvs)
            self.ctx.message(
                protocol.SnapshotComplete(
                    source=self.ctx.source_id, instrument_id=record.instrument_id,
                    sequence=self.ctx.last_sequence + 1,
                ),
                relay_domain=protocol.RelayDomain.SYSTEM,
            )
            self.ctx.flush_nowait()
        elif self.links and (self.spec.role is Role.RELAY or record.source not in (0, self.ctx.source_id)):
            self.ctx.counters["snapshots.forwarded"] += 1
            self.log.info("node %s: passing a snapshot request for source %d (instrument %d) upstream", self.name,
                          record.source, record.instrument_id)
            self.ctx.request_snapshot(record.source, record.instrument_id)
        else:
            self.ctx.counters["snapshots.unsupported"] += 1

    def _on_upstream_control(self, record: Any) -> None:
        self.ctx.counters["control.from_upstream"] += 1

    # -- control socket --------------------------------------------------------------------------
    def _control_handlers(self) -> dict[str, Any]:
        return {
            "health": lambda req: self.health(),
            "stats": lambda req: self.stats(),
            "reconfigure": self._reconfigure,
            "snapshot": self._trigger_snapshot,
            "shutdown": self._shutdown,
            "code": self._code,
            "attach_input": self._attach_input,
            "detach_input": self._detach_input,
        }

    async def _code(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Which files of the code this process loaded changed on disk since (``runtime/_code``):
        a worker thread stats them, so the event loop does not wait for the file system."""
        loaded = self.loaded_code
        if loaded is None:
            return {"tracked": False, "files": 0, "changed": []}
        changed = await trio.to_thread.run_sync(loaded.changed, limiter=self._code_check)
        return {"tracked": True, "files": len(loaded), "changed": [display_path(path) for path in changed]}

    def health(self) -> dict[str, Any]:
        breakers = {b.name: b.state.value for b in self.ctx.breakers.values()}
        trouble = self.instance.trouble()
        healthy = all(state == "closed" for state in breakers.values()) and not trouble
        return {
            "node": self.name,
            "kind": self.spec.name,
            "role": self.spec.role.value,
            "pid": os.getpid(),
            "uptime": round(time.monotonic() - self.started, 3),
            "source_id": self.ctx.source_id,
            "epoch": self.ctx.epoch,
            "status": "healthy" if healthy else "degraded",
            "trouble": trouble,
            "breakers": breakers,
            "params": params_to_plain(self.instance.params),
        }

    def stats(self) -> dict[str, Any]:
        publisher = self.ctx._publisher.statistics() if self.ctx.has_output else None
        links = [link.statistics() for link in self.links]
        inputs = [stats for link in links for stats in link.flattened()]  # peer links count too
        dropped = sum(v for k, v in self.ctx.counters.items() if k.startswith("dropped."))
        if publisher is not None:
            dropped += sum(s.dropped_overflow for s in publisher.subscribers)
        errors = sum(v for k, v in self.ctx.counters.items() if k.startswith("errors."))
        errors += sum(sum(i.decode_errors.values()) for i in inputs)
        gaps = {
            key: sum(i.sequence[key] for i in inputs)
            for key in ("gaps_detected", "gaps_recovered", "gaps_lost", "messages_lost", "duplicates")
        }
        kind_stats = getattr(self.instance, "statistics", None)
        return {
            **self.health(),
            "counters": {
                "received": self.received,
                "sent": self._sent(),
                "dropped": dropped,
                "errors": errors,
                **gaps,
                "reconnects": sum(i.reconnects for i in inputs),
                **dict(sorted(self.ctx.counters.items())),
            },
            "rates": {"in": self.rates.per_second_in, "out": self.rates.per_second_out},
            "usage": self.usage.report(),
            "publisher": dataclasses.asdict(publisher) if publisher is not None else None,
            "inputs": [dataclasses.asdict(i) for i in links],
            "breaker_stats": [dataclasses.asdict(b.statistics()) for b in self.ctx.breakers.values()],
            "kind_stats": kind_stats() if kind_stats is not None else None,
            "gc": dataclasses.asdict(self.gc_pauses.statistics()),
            "cpu": self.cpu.report(),
        }

    def _reconfigure(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """New params (refused whole unless valid and live) and, when given, a new ``cpu`` block."""
        try:
            new_raw = resolve_params({"params": request["params"], "secret_env": self.node.get("secret_env", {})})
        except NodeConfigError as exc:
            raise ValueError(str(exc)) from None
        try:
            jsonschema.validate(new_raw, self.spec.params_schema())
        except jsonschema.ValidationError as exc:  # refused request: the node keeps running
            where = ".".join(str(p) for p in exc.absolute_path) or "params"
            raise ValueError(f"{where}: {exc.message}") from None
        new = build_params(self.spec.params_type, new_raw)
        old_plain, new_plain = params_to_plain(self.instance.params), params_to_plain(new)
        changed = sorted(k for k in set(old_plain) | set(new_plain) if old_plain.get(k) != new_plain.get(k))
        not_live = sorted(set(changed) - live_fields(self.spec.params_type))
        if not_live:
            raise ValueError(f"parameters {', '.join(not_live)} cannot change without a restart")
        if changed:
            self.instance.reconfigure(new)
            self.ctx.counters["reconfigured"] += 1
            self.log.info("node %s reconfigured live: %s", self.name, ", ".join(changed))
        reply: dict[str, Any] = {"changed": changed}
        if "cpu" in request:
            settings = CpuSettings.from_plan(request["cpu"])
            if settings != self.cpu.settings:
                reply["cpu_problems"] = self.apply_cpu(request["cpu"])
                changed.append("cpu")
                self.log.info("node %s cpu now %s", self.name, self.cpu.report()["actual"])
        return reply

    def _trigger_snapshot(self, request: Mapping[str, Any]) -> dict[str, Any]:
        from alphapulse import protocol

        self._snapshot_requested(protocol.SnapshotRequest(source=self.ctx.source_id,
                                                          instrument_id=int(request.get("instrument_id", 0))))
        return {}

    def _attach_input(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Subscribe to one more publisher socket until ``detach_input`` (``alphapulse replay --into``).

        The temporary input is delivered exactly like the plan's inputs (same handler, its own
        sequence tracker) and shows in ``stats``; it is not in the plan, so a restart forgets it.
        """
        overflow = Overflow(request.get("overflow", "block")).value
        spec = InputSpec(node=str(request["name"]), socket=str(request["socket"]), overflow=overflow,
                         queue=int(request.get("queue", 4096)))
        if self._nursery is None or self._deliver is None:
            raise ValueError(f"node {self.name} has no inputs to attach to")
        if spec.node in self._attached or any(link.spec.node == spec.node for link in self.links):
            raise ValueError(f"node {self.name} already has an input named {spec.node!r}")
        link = InputLink(spec, subscriber_name=self.name)
        scope = trio.CancelScope()

        async def run_link() -> None:
            with scope:
                try:
                    await self._run_link(link)
                except OSError as exc:  # a temporary input that cannot connect must not take the node down
                    self.ctx.counters["errors.attached_input"] += 1
                    self.log.error("node %s: temporary input %s failed: %s", self.name, spec.node, exc)
                    self._attached.pop(spec.node, None)
                    self.links.remove(link)

        self._attached[spec.node] = (scope, link)
        self.links.append(link)
        self._nursery.start_soon(run_link)
        self.log.info("node %s: attached temporary input %s (%s)", self.name, spec.node, spec.socket)
        return {"attached": spec.node}

    def _detach_input(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        if name not in self._attached:
            raise KeyError(f"node {self.name} has no temporary input {name!r}")
        scope, link = self._attached.pop(name)
        scope.cancel()
        self.links.remove(link)
        self.log.info("node %s: detached temporary input %s", self.name, name)
        return {"detached": name}

    def _shutdown(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.stop()
        return {"stopping": True}


def load_plan(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_node_process(plan_path: str, name: str) -> int:
    """Entry point of ``alphapulse node``: returns the process exit code."""
    end_with_supervisor()
    logging.basicConfig(
        level=os.environ.get("ALPHAPULSE_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)s {name} %(name)s: %(message)s",
    )
    log = logging.getLogger("alphapulse.node")
    try:
        plan = load_plan(plan_path)
        entry = plan["nodes"][name]
    except (OSError, KeyError, ValueError) as exc:
        log.error("cannot start node %s: %s", name, exc)
        return 2
    # before anything costly: a node failing over and over waits longer before each start
    run_dir = plan.get("run_dir") or os.path.dirname(os.path.abspath(plan_path))
    crash_loop = CrashLoop(state_file(run_dir, name), CrashPolicy.from_restart(entry.get("restart", {})), name=name)
    if not crash_loop.wait_before_start():
        return 0
    code = _run_node(plan, name, crash_loop)
    if code == 0:
        crash_loop.stopped()
    return code


def _run_node(plan: dict[str, Any], name: str, crash_loop: CrashLoop) -> int:
    log = logging.getLogger("alphapulse.node")
    try:
        host = NodeHost(plan, name)
    except (NodeConfigError, OSError, KeyError, ValueError) as exc:
        log.error("cannot start node %s: %s", name, exc)
        crash_loop.failed(f"cannot start node {name}: {exc}")
        return 2
    host.apply_cpu(host.node.get("cpu"))  # before any thread starts: new threads inherit it
    # the kind's own first: on a fresh install its compile then runs beside the runtime
    # kernels' (compiled by whichever node took that lock first), not after it
    load_kind_kernels(host.instance, host.spec.name, host.spec.path)
    load_hot_kernels()
    roots = [package_root(__name__), package_root(host.spec.module)]
    host.loaded_code = LoadedCode(root for root in roots if root)  # after the start-up imports
    freeze_heap()  # imports, kernels and the kind's set-up are done: later full collections skip all of it
    host.gc_pauses.install()
    host.freeze_heap_once_running = True
    host.watchdog = Watchdog(float(host.node.get("restart", {}).get("watchdog_seconds", DEFAULT_SECONDS)))
    try:
        trio.run(host.run)
    except Exception as exc:  # the node's last words: the traceback once, then the reason on one line
        log.error("node %s failed", name, exc_info=exc)
        reason = f"node {name} {FAILED}{describe_failure(exc)}"
        log.error("%s", reason)
        crash_loop.failed(reason)
        return 1
    finally:
        host.watchdog.disarm()
        host.gc_pauses.uninstall()
    return 0
