"""Process drivers for ``benchmarks/relay.py``: one role per process, driven by files.

Run as ``python benchmarks/relay_procs.py ROLE CONFIG_JSON``. Roles:

* ``ap_source`` — an AlphaPulse producer: :func:`alphapulse.runtime.open_publisher` on the plan's
  source socket, publishing pre-built 72-byte Trade frames (``bulk``: blocks of ``per_send``
  frames with backpressure; ``single``: one frame per ``publish_nowait``; ``raw``: one frame per
  ``send`` on the relay's connection, optionally paced), or building each message at send time
  with ``MessageBuilder`` (``paced``: latency rounds, ``even``, ``tick`` or ``batched`` pacing);
* ``ap_sink`` — an :class:`alphapulse.runtime.InputLink` (CRC checks, sequence tracker) from the
  plan's sink entry to the relay; counts, checks sequence continuity, measures latency;
* ``zmq_source`` / ``zmq_proxy`` / ``zmq_sink`` — the pyzmq reference (PUB → XSUB/XPUB proxy →
  SUB over ipc://, ``XPUB_NODROP`` on every publishing socket, so it is lossless too);
* ``floor_source`` / ``floor_relay`` / ``floor_sink`` — blocking-socket Python doing no work.

A process set runs several *rounds*. Protocol, per round ``k`` (files in ``cfg["dir"]``):
the source writes ``src.ready.k`` when it can start (round 0: after warm-up frames reached the
sinks; later: after re-stamping its frames); a sink writes ``<name>.ready.0`` when it has seen a
warm-up frame; the parent creates ``go.k``; each sink writes ``<name>.result.k`` (JSON) when it has
received all of round ``k``. Warm-up frames come from a separate source id, so the measured stream
starts at counter 1 of the measured source. Nothing here waits without a deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import resource
import struct
import sys
import time

import numpy as np

MSG = 72
SEQ_MASK = (1 << 40) - 1
WARM_SOURCE_OFFSET = 100
WARM_INSTRUMENT = 7
MEASURED_INSTRUMENT = 11
HELLO = b"HELLO"


# -- small helpers --------------------------------------------------------------------------------
def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def set_timer_slack(ns: int = 1) -> None:
    """Let ``time.sleep`` wake within microseconds (the default slack is 50 µs)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK


def touch(path: str, text: str = "") -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def sleep_until(target: float) -> None:
    """Sleep (not spin) until perf_counter() reaches ``target``."""
    delay = target - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def paced_slots(n: int, rate: float, pacing: str):
    """Yield message indexes at ``rate``/s: ``even`` sleeps before every message (one every 1/rate
    s); ``tick`` wakes once per millisecond and yields the messages due, back to back (what a
    trio-paced producer such as ``source.counter`` does: trio sleeps in whole milliseconds)."""
    t0 = time.perf_counter()
    if pacing == "even":
        for i in range(n):
            sleep_until(t0 + i / rate)
            yield i
        return
    i = 0
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            yield i
            i += 1
        sleep_until(t0 + (int((time.perf_counter() - t0) * 1000) + 1) / 1000)


def paced_groups(n: int, rate: float, pacing: str):
    """Yield ``(lo, hi)``: the messages ``lo..hi-1`` go out together, in one send. ``even`` and
    ``tick`` give one message per send (see :func:`paced_slots`); ``batched`` gives, each
    millisecond, all the messages due, as one send: how the project's own sources publish
    (``source.counter`` flushes ``batch`` messages per tick, an adapter one block per frame)."""
    if pacing != "batched":
        for i in paced_slots(n, rate, pacing):
            yield i, i + 1
        return
    t0 = time.perf_counter()
    i = 0
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        if due > i:
            yield i, due
            i = due
        sleep_until(t0 + (int((time.perf_counter() - t0) * 1000) + 1) / 1000)


def percentiles_us(lat_ns: np.ndarray) -> dict[str, float]:
    if lat_ns.size == 0:
        return {}
    p50, p99, p999 = np.percentile(lat_ns, [50, 99, 99.9]) / 1000.0
    return {"p50_us": round(float(p50), 1), "p99_us": round(float(p99), 1), "p999_us": round(float(p999), 1),
            "max_us": round(float(lat_ns.max()) / 1000.0, 1), "samples": int(lat_ns.size)}


class Files:
    def __init__(self, cfg: dict) -> None:
        self.dir = cfg["dir"]
        self.deadline = float(cfg["deadline"])  # time.time() after which everyone gives up

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def exists(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    def left(self) -> float:
        return self.deadline - time.time()

    def ready_then_go(self, k: int) -> bool:
        """Source side of round ``k``: say ready, then wait (sleeping) for the parent's go; False
        when the deadline passed first."""
        touch(self.path(f"src.ready.{k}"))
        while not self.exists(f"go.{k}"):
            if self.left() < 0:
                return False
            time.sleep(0.001)
        return True

    def source_result(self, k: int, t_go: int, n: int, cpu0: float) -> None:
        touch(self.path(f"src.result.{k}"), json.dumps({
            "t_go_ns": t_go, "t_end_ns": time.time_ns(), "sent": n, "cpu_s": cpu_seconds() - cpu0,
        }))

    def linger(self) -> None:
        """Stay up (connected, idle) until the parent stops this process or the deadline passes."""
        while self.left() > 0:
            time.sleep(0.05)


# -- frames ---------------------------------------------------------------------------------------
class Frames:
    """``n`` pre-built single-Trade frames of one source; ``restamp`` moves them to the next round's
    sequence numbers (and fresh CRCs) outside the measured window."""

    def __init__(self, n: int, source: int, epoch: int, relay_domain: int) -> None:
        from alphapulse import protocol
        from alphapulse.protocol._batch import CRC_TABLES, _stamp_checksums

        self._stamp = lambda raw, count: _stamp_checksums(CRC_TABLES, raw, count, MSG)
        self.n, self.epoch = n, epoch
        k = min(n, 1000)
        cols = {
            "instrument_id": np.full(k, MEASURED_INSTRUMENT, np.uint64),
            "price": 100_00000000 + np.arange(k, dtype=np.int64) % 1000,
            "quantity": np.arange(1, k + 1, dtype=np.int64),
            "exchange_ts_ns": np.full(k, time.time_ns(), np.uint64),
            "side": (1 + np.arange(k) % 2).astype(np.uint8),
        }
        tile = np.frombuffer(protocol.build_trade_batch(cols, source, 1, relay_domain, time.time_ns()), np.uint8)
        reps = -(-n // k)
        self.raw = np.tile(tile, reps)[: n * MSG].copy()
        self.view = self.raw.view(protocol.TRADE_MESSAGE_DTYPE)
        self.mv = memoryview(self.raw)
        self.first_counter = 0

    def restamp(self, first_counter: int) -> None:
        """Counters first_counter .. first_counter+n-1, timestamps now, CRCs recomputed."""
        counters = np.arange(first_counter, first_counter + self.n, dtype=np.uint64)
        self.view["sequence"] = (np.uint64(self.epoch) << np.uint64(40)) | counters
        self.view["quantity"] = counters.astype(np.int64)
        self.view["timestamp_ns"] = np.uint64(time.time_ns())
        self._stamp(self.raw, self.n)
        self.first_counter = first_counter


# -- AlphaPulse source ----------------------------------------------------------------------------
async def _ap_source(cfg: dict) -> None:
    import trio

    from alphapulse import protocol
    from alphapulse.runtime import make_sequence, open_publisher
    from alphapulse.runtime._epoch import epoch_from_time

    files = Files(cfg)
    rounds = cfg["rounds"]
    sid, domain = int(cfg["source_id"]), int(cfg["relay_domain"])
    epoch = epoch_from_time(time.time_ns())
    prebuilt = max((r["n"] for r in rounds if r["mode"] != "paced"), default=0)
    frames = Frames(prebuilt, sid, epoch, domain) if prebuilt else None
    builder = protocol.MessageBuilder(domain, sid, make_sequence(epoch, 1))
    warm = protocol.MessageBuilder(domain, sid + WARM_SOURCE_OFFSET, make_sequence(epoch, 1))
    warm_trade = protocol.Trade(instrument_id=WARM_INSTRUMENT, price=1, quantity=1, exchange_ts_ns=0)
    one_off, one_size = np.zeros(1, np.int64), np.full(1, MSG, np.int64)
    FrameBlock = protocol.FrameBlock
    next_counter = 1
    set_timer_slack()

    async with open_publisher(cfg["path"], source_id=sid, retransmit_capacity=int(cfg.get("retransmit", 16384))
                              ) as pub:
        # round 0: warm-up frames (another source id) until every sink has seen one
        while not all(files.exists(f"{name}.ready.0") for name in cfg["sinks"]):
            if files.left() < 0:
                return
            pub.publish_nowait(FrameBlock.from_bytes(warm.build(warm_trade, time.time_ns())))
            await trio.sleep(0.005)
        for k, rnd in enumerate(rounds):
            mode, n = rnd["mode"], int(rnd["n"])
            if mode != "paced":
                # nothing of the previous round may still sit in a queue: we rewrite those bytes
                while any(s.queued for s in pub._subscribers) and files.left() > 0:
                    await trio.sleep(0.001)
                frames.restamp(next_counter)
            touch(files.path(f"src.ready.{k}"))
            while not files.exists(f"go.{k}"):
                if files.left() < 0:
                    return
                await trio.sleep(0.001)
            cpu0 = cpu_seconds()
            t_go = time.time_ns()
            if mode == "bulk":
                per = int(rnd["per_send"])
                offsets = np.arange(per, dtype=np.int64) * MSG
                sizes = np.full(per, MSG, np.int64)
                mv = frames.mv
                for i in range(0, n, per):
                    m = min(per, n - i)
                    block = FrameBlock(mv[i * MSG:(i + m) * MSG], offsets[:m], sizes[:m])
                    block.sequence_run = (sid, make_sequence(epoch, next_counter + i))  # as a node's flush says
                    await pub.publish(block)
            elif mode in ("single", "raw"):
                # one message per send, as fast as possible or paced in 1 ms ticks. ``single`` goes
                # through Publisher.publish_nowait (the AlphaPulse producer API, ~5 µs a message in
                # Python); ``raw`` writes each frame with its own send() straight onto the relay's
                # connection (same bytes on the wire), so one producer can offer several 100k msgs/s.
                rate = float(rnd.get("rate", 0))
                mv = frames.mv
                sock = pub._subscribers[0].sock if mode == "raw" else None
                t0 = time.perf_counter()
                i = 0
                while i < n:
                    if rate > 0:
                        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
                        if due <= i:
                            await trio.sleep_until(trio.current_time() + (i + 1) / rate
                                                   - (time.perf_counter() - t0))
                            continue
                    else:
                        # a trio checkpoint costs tens of µs here: the raw producer, offering what it
                        # can, takes one every 1024 sends (every 64 cut its offered rate by a fifth)
                        due = min(n, i + (64 if sock is None else 1024))
                    if sock is None:
                        while i < due:
                            pub.publish_nowait(FrameBlock(mv[i * MSG:(i + 1) * MSG], one_off, one_size))
                            i += 1
                        await pub.wait_for_space()
                        continue
                    send = sock.send
                    while i < due:
                        try:
                            sent = send(mv[i * MSG:(i + 1) * MSG])
                        except BlockingIOError:  # the relay pushes back: wait, lossless
                            await trio.lowlevel.wait_writable(sock)
                            continue
                        if sent < MSG:  # never seen for 72 bytes; finish the frame anyway
                            sock.setblocking(True)
                            sock.sendall(mv[i * MSG + sent:(i + 1) * MSG])
                            sock.setblocking(False)
                        i += 1
                    await trio.lowlevel.checkpoint()
            else:  # paced: one message built and sent per slot, timestamped at send
                rate = float(rnd["rate"])
                builder.next_sequence = make_sequence(epoch, next_counter)
                trade = protocol.Trade(instrument_id=MEASURED_INSTRUMENT, price=100_00000000, quantity=0,
                                       exchange_ts_ns=0, side=1)
                for lo, hi in paced_groups(n, rate, rnd.get("pacing", "even")):
                    ts = time.time_ns()
                    if hi - lo == 1:
                        pub.publish_nowait(FrameBlock(builder.build(trade, ts), one_off, one_size))
                    else:
                        run = (sid, builder.next_sequence)  # as a node's flush says (``ExecutionContext``)
                        pub.publish_nowait(FrameBlock.join([builder.build(trade, ts) for _ in range(hi - lo)], run))
                    if lo // 32 != hi // 32 or any(s.queued for s in pub._subscribers):
                        await pub.wait_for_space()
            next_counter += n
            files.source_result(k, t_go, n, cpu0)
        while files.left() > 0:  # keep serving (queues drain) until the parent stops us
            await trio.sleep(0.05)


# -- AlphaPulse sink ------------------------------------------------------------------------------
async def _ap_sink(cfg: dict) -> None:
    import trio

    from alphapulse.runtime import InputLink, InputSpec
    from alphapulse.runtime._cpu import CpuPlacement, CpuSettings

    files = Files(cfg)
    name, sid = cfg["name"], int(cfg["source_id"])
    rounds = cfg["rounds"]
    placement = CpuPlacement()

    def place(k: int) -> None:
        """The plan's cpu block, as a node host sets it; a round may set another policy (A/B in one set)."""
        policy = rounds[k].get("sink_policy") if k < len(rounds) else None
        placement.apply(CpuSettings.from_plan({**(cfg.get("cpu") or {}), **({"policy": policy} if policy else {})}))

    place(0)
    link = InputLink(InputSpec.from_plan(cfg["input"]), subscriber_name=name)
    totals = np.cumsum([int(r["n"]) for r in rounds])
    lat = np.zeros(max(int(r["n"]) for r in rounds if r.get("latency")) if any(r.get("latency") for r in rounds)
                   else 0, np.int64)
    st = {"count": 0, "next": 1, "order_errors": 0, "warm": 0, "round": 0, "round_start": 0, "t_last": 0,
          "nlat": 0, "ready": False}
    round_done = trio.Event()

    def finish_round() -> None:
        k = st["round"]
        lat_stats = percentiles_us(lat[: st["nlat"]]) if rounds[k].get("latency") else {}
        touch(files.path(f"{name}.result.{k}"), json.dumps({
            "received": st["count"] - st["round_start"], "t_last_ns": st["t_last"], "order_errors": st["order_errors"],
            "sequence": link.statistics().sequence, "decode_errors": link.statistics().decode_errors,
            "latency": lat_stats, "lane_reads": link.lane_reads,
        }))
        st["round"] += 1
        st["round_start"] = st["count"]
        st["nlat"] = 0
        place(st["round"])
        if st["round"] == len(rounds):
            round_done.set()

    head = struct.Struct("<HQQ")  # source, sequence, timestamp_ns: header bytes 6..24
    stamp = struct.Struct("<Q")  # timestamp_ns: header bytes 16..24

    def deliver_now(block) -> bool:
        # Only the first and last headers are read (the runtime's tracker has already checked every
        # sequence number): a consumer that needs no header columns does not pay for them.
        now = time.time_ns()
        k = len(block)
        data, offsets = block.data, block.offsets
        s0, q0, t0 = head.unpack_from(data, int(offsets[0]) + 6)
        s1, q1, _ = head.unpack_from(data, int(offsets[k - 1]) + 6) if k > 1 else (s0, q0, t0)
        if s0 != sid or s1 != sid:  # warm-up frames: rare, not measured
            measured = block.source == sid
            st["warm"] += int(k - np.count_nonzero(measured))
            if not st["ready"]:
                st["ready"] = True
                touch(files.path(f"{name}.ready.0"))
            if not measured.any():
                return True
            block = block.select(measured)
            k = len(block)
            q0, q1, t0 = int(block.sequence[0]), int(block.sequence[-1]), int(block.timestamp_ns[0])
        first, last = q0 & SEQ_MASK, q1 & SEQ_MASK
        if first != st["next"] or last - first != k - 1:
            st["order_errors"] += 1
        st["next"] = last + 1
        if rounds[st["round"]].get("latency"):
            j = st["nlat"]
            if k == 1:
                lat[j] = now - t0
            elif k <= 16:  # a small batch: per frame, as the pyzmq sink does (no kernel for the columns)
                for m, off in enumerate(block.offsets.tolist()):
                    lat[j + m] = now - stamp.unpack_from(data, off + 16)[0]
            else:
                lat[j:j + k] = now - block.timestamp_ns.astype(np.int64)
            st["nlat"] = j + k
        st["count"] += k
        st["t_last"] = now
        while st["round"] < len(rounds) and st["count"] >= totals[st["round"]]:
            finish_round()
        return True

    async def deliver(block) -> None:
        deliver_now(block)

    with trio.move_on_at(trio.current_time() + max(0.0, files.left())):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(link.run, deliver, deliver_now=deliver_now))
            await round_done.wait()
            while files.left() > 0:  # stay connected (idle) until the parent stops us
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


# -- pyzmq reference -------------------------------------------------------------------------------
def _zmq_socket(ctx, kind, cfg: dict):
    import zmq

    sock = ctx.socket(kind)
    hwm = int(cfg["hwm"])
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, 0)
    if kind in (zmq.PUB, zmq.XPUB):
        sock.setsockopt(zmq.XPUB_NODROP, 1)
    return sock


def zmq_proxy(cfg: dict) -> None:
    import zmq

    ctx = zmq.Context()
    front = _zmq_socket(ctx, zmq.XSUB, cfg)
    front.bind(cfg["in"])
    back = _zmq_socket(ctx, zmq.XPUB, cfg)
    back.bind(cfg["out"])
    zmq.proxy(front, back)  # C loop; the parent kills this process


def zmq_source(cfg: dict) -> None:
    import zmq

    from alphapulse import protocol

    files = Files(cfg)
    set_timer_slack()
    ctx = zmq.Context()
    pub = _zmq_socket(ctx, zmq.PUB, cfg)
    if cfg.get("bind"):
        pub.bind(cfg["endpoint"])
    else:
        pub.connect(cfg["endpoint"])
    rounds = cfg["rounds"]
    prebuilt = max((r["n"] for r in rounds if r["mode"] != "paced"), default=0)
    frames = Frames(prebuilt, 1, 1, 1) if prebuilt else None
    builder = protocol.MessageBuilder(1, 1, 1)
    while not all(files.exists(f"{name}.ready.0") for name in cfg["sinks"]):
        if files.left() < 0:
            return
        pub.send(HELLO)
        time.sleep(0.005)
    for k, rnd in enumerate(rounds):
        mode, n = rnd["mode"], int(rnd["n"])
        if not files.ready_then_go(k):
            return
        cpu0 = cpu_seconds()
        t_go = time.time_ns()
        send = pub.send
        if mode in ("bulk", "single"):
            per = int(rnd.get("per_send", 1))
            mv = frames.mv
            for i in range(0, n, per):
                send(mv[i * MSG:min(n, i + per) * MSG])
        else:
            trade = protocol.Trade(instrument_id=MEASURED_INSTRUMENT, price=100_00000000, quantity=0,
                                   exchange_ts_ns=0, side=1)
            for lo, hi in paced_groups(n, float(rnd["rate"]), rnd.get("pacing", "even")):
                ts = time.time_ns()
                send(b"".join([builder.build(trade, ts) for _ in range(hi - lo)]))
        files.source_result(k, t_go, n, cpu0)
    files.linger()


def zmq_sink(cfg: dict) -> None:
    import zmq

    files = Files(cfg)
    name = cfg["name"]
    ctx = zmq.Context()
    sub = _zmq_socket(ctx, zmq.SUB, cfg)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(cfg["endpoint"])
    rounds = cfg["rounds"]
    ready = False
    for k, rnd in enumerate(rounds):
        n = int(rnd["n"])
        latency = bool(rnd.get("latency"))
        lat = np.zeros(n if latency else 0, np.int64)
        got = 0
        t_last = 0
        timed_out = False
        while got < n:
            left = files.left()
            if left <= 0:
                timed_out = True
                break
            sub.setsockopt(zmq.RCVTIMEO, max(1, int(left * 1000)))
            try:
                frame = sub.recv(copy=False)
            except zmq.Again:
                timed_out = True
                break
            now = time.time_ns()
            size = len(frame)
            if size == len(HELLO):
                if not ready:
                    ready = True
                    touch(files.path(f"{name}.ready.0"))
                continue
            m = size // MSG
            if latency:
                buf = frame.buffer
                for j in range(m):
                    lat[got + j] = now - int.from_bytes(buf[j * MSG + 16:j * MSG + 24], "little")
            got += m
            t_last = now
        touch(files.path(f"{name}.result.{k}"), json.dumps({
            "received": got, "t_last_ns": t_last, "timed_out": timed_out,
            "latency": percentiles_us(lat[:got]) if latency else {},
        }))
    files.linger()


# -- the floor: what an ideal Python design does on this machine ----------------------------------
# Blocking sockets, no decode, no CRC, no sequence tracking, no event loop: the relay recv()s and
# sendall()s the bytes to each subscriber; sinks only read the timestamp. Paced rounds only. The
# source builds its frames as the other layouts' sources do (``MessageBuilder``, after taking the
# timestamp), so the floor differs from them in transport alone. Any real design (ours, pyzmq)
# pays more; a goal this misses is under the machine's floor.
MARK = b"\x00" * MSG  # a ready ping: never a real frame (magic is 0xDEADBEEF)


def connect_unix(path: str):
    """A blocking Unix stream socket connected to ``path``, retried until it listens."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    while True:
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.01)


def floor_relay(cfg: dict) -> None:
    import select
    import socket

    listeners = {}
    for role in ("in", "out"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(cfg[role])
        sock.listen(16)
        listeners[sock] = role
    subs: list = []
    upstream = None
    while upstream is None or len(subs) < int(cfg["n_sinks"]):
        for sock in select.select(list(listeners), [], [], 1.0)[0]:
            conn, _ = sock.accept()
            if listeners[sock] == "in":
                upstream = conn
            else:
                subs.append(conn)
    while True:
        data = upstream.recv(65536)
        if not data:
            return
        for sub in subs:
            sub.sendall(data)


def floor_source(cfg: dict) -> None:
    """Sends to the floor relay's ``endpoint``, or, given ``listen``, accepts ``n_sinks`` sinks
    there and sends every message to each itself (the floor with no relay hop)."""
    import socket

    from alphapulse import protocol

    files = Files(cfg)
    set_timer_slack()
    if "listen" in cfg:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(cfg["listen"])
        listener.listen(16)
        socks = [listener.accept()[0] for _ in range(int(cfg["n_sinks"]))]
    else:
        socks = [connect_unix(cfg["endpoint"])]
    frame = bytearray(b"\x01" * MSG)
    builder = protocol.MessageBuilder(1, 1, 1)
    trade = protocol.Trade(instrument_id=MEASURED_INSTRUMENT, price=100_00000000, quantity=0, exchange_ts_ns=0, side=1)
    while not all(files.exists(f"{name}.ready.0") for name in cfg["sinks"]):
        if files.left() < 0:
            return
        for sock in socks:
            sock.sendall(MARK)
        time.sleep(0.005)
    for k, rnd in enumerate(cfg["rounds"]):
        n = int(rnd["n"])
        if not files.ready_then_go(k):
            return
        cpu0 = cpu_seconds()
        t_go = time.time_ns()
        if rnd.get("mode") == "raw":  # one frame per send, as fast as the sends go (the relay's capacity)
            frame[16:24] = t_go.to_bytes(8, "little")
            one = bytes(frame)
            for _ in range(n):
                for sock in socks:
                    sock.sendall(one)
            files.source_result(k, t_go, n, cpu0)
            continue
        for lo, hi in paced_groups(n, float(rnd["rate"]), rnd.get("pacing", "even")):
            # built as the other two sources build theirs (the same Python before the send): the
            # timestamp is taken first, so building is inside every layout's latency alike
            ts = time.time_ns()
            data = b"".join([builder.build(trade, ts) for _ in range(hi - lo)])
            for sock in socks:
                sock.sendall(data)
        files.source_result(k, t_go, n, cpu0)
    files.linger()


def floor_sink(cfg: dict) -> None:

    files = Files(cfg)
    name = cfg["name"]
    sock = connect_unix(cfg["endpoint"])
    sock.settimeout(max(1.0, files.left()))
    rest = b""
    ready = False
    for k, rnd in enumerate(cfg["rounds"]):
        n = int(rnd["n"])
        lat = np.zeros(n, np.int64)
        got = t_last = 0
        while got < n:
            data = rest + sock.recv(65536)
            now = time.time_ns()
            whole = len(data) - len(data) % MSG
            rest = data[whole:]
            for at in range(0, whole, MSG):
                if data[at] == 0:  # a ready ping
                    if not ready:
                        ready = True
                        touch(files.path(f"{name}.ready.0"))
                    continue
                lat[got] = now - int.from_bytes(data[at + 16:at + 24], "little")
                got += 1
            t_last = now
        touch(files.path(f"{name}.result.{k}"), json.dumps({
            "received": got, "t_last_ns": t_last, "latency": percentiles_us(lat[:got]),
        }))
    files.linger()


def _link_probe(b, n: int, frames: int) -> float:
    """The runtime's own read path for ``n`` reads of ``frames`` messages each: an ``InputLink``
    (idle lane unless ALPHAPULSE_IDLE_LANE=0, quick path, CRC check, sequence tracking)
    delivering to a ``deliver_now`` that counts. Returns the CPU seconds of the reads after the first."""
    import trio

    from alphapulse.runtime import InputLink, InputSpec
    from alphapulse.runtime._warm import load_hot_kernels

    load_hot_kernels()
    link = InputLink(InputSpec(node="probe", socket="unused"), subscriber_name="probe")
    b.setblocking(False)
    got = 0
    total = n * frames
    done = None

    def deliver_now(block) -> bool:
        nonlocal got
        got += len(block)
        if got >= total:
            done.set()
        return True

    async def deliver(block) -> None:
        deliver_now(block)

    async def receive() -> float:
        nonlocal done
        done = trio.Event()
        link._deliver_now = deliver_now
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link._read_until_closed, b, deliver)
            while got == 0:
                await trio.sleep(0.001)
            start = cpu_seconds()
            await done.wait()
            used = cpu_seconds() - start
            nursery.cancel_scope.cancel()
        return used * n / max(1, n - 1)

    return trio.run(receive)


def wake_probe(cfg: dict) -> None:
    """CPU per wakeup on this machine now: a forked sender writes ``frames`` 72-byte messages in
    one send every ``interval_us`` (default: one every 100 µs); this process waits for each
    (``trio``: ``wait_readable`` + ``recv``; ``blocking``: ``recv``; ``link``: an ``InputLink``).
    Prints JSON. The floor under any design that wakes once per send. The longer the process
    sleeps between sends, the colder it wakes: at one 10-message send a millisecond (a ``tick``
    round's reads) the same path costs more per read than at 100 µs."""
    import socket

    a, b = socket.socketpair()
    n = int(cfg.get("n", 10_000))
    frames = int(cfg.get("frames", 1))
    rate = 1e6 / float(cfg.get("interval_us", 100))
    pid = os.fork()
    if pid == 0:  # sender
        b.close()
        set_timer_slack()
        sends = [b"x" * (MSG * frames)] * n
        if cfg["mode"] == "link":  # real frames, in order, one source
            from alphapulse import protocol
            from alphapulse.runtime import make_sequence

            builder = protocol.MessageBuilder(1, 5, make_sequence(3, 1))
            trade = protocol.Trade(instrument_id=11, price=1, quantity=1, exchange_ts_ns=0)
            sends = [b"".join(builder.build(trade, i) for _ in range(frames)) for i in range(n)]
        time.sleep(0.2 if cfg["mode"] != "link" else 1.0)
        for i in paced_slots(n, rate, "even"):
            a.send(sends[i])
        os._exit(0)
    a.close()
    got, total = 0, n * MSG * frames
    if cfg["mode"] == "link":
        used = _link_probe(b, n, frames)
    elif cfg["mode"] == "blocking":
        c0 = cpu_seconds()
        while got < total:
            got += len(b.recv(65536))
        used = cpu_seconds() - c0
    else:
        import trio

        b.setblocking(False)

        async def receive() -> float:
            nonlocal got
            start = cpu_seconds()
            while got < total:
                await trio.lowlevel.wait_readable(b)
                got += len(b.recv(65536))
            return cpu_seconds() - start

        used = trio.run(receive)
    os.waitpid(pid, 0)
    print(json.dumps({"mode": cfg["mode"], "frames": frames, "cpu_us_per_wakeup": round(used / n * 1e6, 2)}))


def handoff_probe(cfg: dict) -> None:
    """Latency of one handoff on this machine now: a sender writes 8 bytes (its clock) once a
    millisecond and sleeps; a forked receiver, blocked in ``recv``, notes how late each arrived.
    ``cfg["cpus"]``: the sender's and the receiver's CPU (the same one: the receiver runs once
    the sender sleeps; two: the receiver's CPU is idle and must be woken). Prints JSON. The
    floor under every hop of any design, and what a hop costs when it lands on an idle CPU."""
    import socket

    sender_cpu, receiver_cpu = cfg["cpus"]
    n = int(cfg.get("n", 1000))
    a, b = socket.socketpair()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # receiver
        os.sched_setaffinity(0, {receiver_cpu})
        a.close()
        lat = np.zeros(n, np.int64)
        for i in range(n):
            data = b.recv(8, socket.MSG_WAITALL)
            lat[i] = time.time_ns() - int.from_bytes(data, "little")
        os.write(w, json.dumps(percentiles_us(lat[n // 10:])).encode())  # the first tenth: warm-up
        os._exit(0)
    os.sched_setaffinity(0, {sender_cpu})
    b.close()
    set_timer_slack()
    time.sleep(0.1)
    t0 = time.perf_counter()
    for i in range(n):
        sleep_until(t0 + i / 1000)
        a.send(time.time_ns().to_bytes(8, "little"))
    os.waitpid(pid, 0)
    print(os.read(r, 65536).decode())


def main(argv: list[str]) -> int:
    role, cfg = argv[1], json.loads(argv[2])
    if role != "wake":  # every process of both systems freezes its start-up heap, as a node process does
        from alphapulse.runtime._heap import freeze_heap
        from alphapulse.runtime._warm import load_hot_kernels

        if role.startswith("ap_"):
            load_hot_kernels()
        freeze_heap()
    if role == "ap_source":
        import trio

        trio.run(_ap_source, cfg)
    elif role == "ap_sink":
        import trio

        trio.run(_ap_sink, cfg)
    else:
        {"zmq_source": zmq_source, "zmq_sink": zmq_sink, "zmq_proxy": zmq_proxy, "wake": wake_probe,
         "handoff": handoff_probe, "floor_relay": floor_relay, "floor_source": floor_source,
         "floor_sink": floor_sink}[role](cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
