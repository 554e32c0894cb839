"""Internals of ``sink.websocket``: market state and JSON protocol (sans-IO), fan-out, servers.

Private to the WebSocket bridge kind (the leading underscore keeps it out of kind discovery);
the node file (``nodes/websocket.py``) wires these to the runtime. The dashboard page it serves
is plain HTML/JS/CSS in ``nodes/dashboard/``.
"""

from nodes._websocket._bridge import Bridge
from nodes._websocket._market import Market
from nodes._websocket._server import ClientServer, dashboard_app, poll_health, serve_dashboard
from nodes._websocket._wire import CHANNELS, ClientError, parse_request

__all__ = [
    "CHANNELS",
    "Bridge",
    "ClientError",
    "ClientServer",
    "Market",
    "dashboard_app",
    "parse_request",
    "poll_health",
    "serve_dashboard",
]
