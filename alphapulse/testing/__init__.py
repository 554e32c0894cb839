"""Test support for adapters, public like ``trio.testing``: replay servers over real sockets.

* :func:`serve_capture` — a trio-websocket server on 127.0.0.1 that plays a capture's received
  frames to each client (after its subscribe messages), as fast as possible or at recorded
  speed, with fault injection by frame index (:class:`ReplayFaults`: drop, duplicate, corrupt,
  garbage, cut the connection and continue or restart) and a :class:`ReplayResponder` hook to
  answer resubscribes.
* :func:`serve_bursts` — the same frames written many to a TCP write (``per_write``), as a live
  venue's bursts arrive, so an adapter's read path meets several frames per read.
* :func:`serve_http` — canned REST bodies by path and query (:func:`routes_from_capture` reads
  them from a capture's ``URL -> TS: BODY`` lines), every request recorded.
* :func:`run_node` — run a node kind in-process under the real NodeHost, its output read through
  a real publisher socket and InputLink into decoded records (:class:`NodeRun`).

Both follow trio's ``nursery.start`` protocol and return an object with the bound ``port`` and
``url``::

    async with trio.open_nursery() as nursery:
        ws = await nursery.start(functools.partial(serve_capture, path, wait_for_messages=1))
        http = await nursery.start(serve_http, routes_from_capture(http_path))
        ...  # point the adapter's endpoint params at ws.url and http.url
"""

from alphapulse.testing._bursts import BurstServer, serve_bursts
from alphapulse.testing._http import CannedResponse, HttpServer, routes_from_capture, serve_http
from alphapulse.testing._node import NodeRun, Published, run_node
from alphapulse.testing._replay import CaptureServer, ReplayFaults, ReplayResponder, load_frames, serve_capture

__all__ = [
    "BurstServer",
    "CannedResponse",
    "CaptureServer",
    "HttpServer",
    "NodeRun",
    "Published",
    "ReplayFaults",
    "ReplayResponder",
    "load_frames",
    "routes_from_capture",
    "run_node",
    "serve_bursts",
    "serve_capture",
    "serve_http",
]
