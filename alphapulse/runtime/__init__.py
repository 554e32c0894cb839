"""The runtime: node processes, links over Unix sockets, gap recovery, breakers, control.

Node kinds import only names exported here (and from ``alphapulse.protocol``).
"""

from alphapulse.runtime._breaker import (
    BREAKER_TRANSITIONS,
    BreakerSettings,
    BreakerState,
    CircuitBreaker,
)
from alphapulse.runtime._context import NodeContext
from alphapulse.runtime._control import ControlError, request, request_async, serve_control
from alphapulse.runtime._durable import fsync_directory, write_file_atomically
from alphapulse.runtime._epoch import UpstreamEpochs, epoch_from_time, make_sequence, split_sequence
from alphapulse.runtime._filter import Subscription, subscription
from alphapulse.runtime._headers import relay_domains
from alphapulse.runtime._host import NodeConfigError, NodeHost, load_plan, run_node_process
from alphapulse.runtime._input import Backoff, InputLink, InputSpec, control_frame
from alphapulse.runtime._listen import address, start_listening
from alphapulse.runtime._peers import peer_publishers
from alphapulse.runtime._publisher import Overflow, Publisher, open_publisher
from alphapulse.runtime._report import report
from alphapulse.runtime._resume import (
    frames_in_chunks,
    merge_positions,
    positions_in_frame_files,
    positions_of,
    read_positions,
    write_positions,
)
from alphapulse.runtime._retransmit import RetransmitBuffer
from alphapulse.runtime._sequence import GAP_TRANSITIONS, SequenceTracker
from alphapulse.runtime._stalled import StalledWrites
from alphapulse.runtime._tap import TapSummary, TapView, format_message, subscribe_frame
from alphapulse.runtime._upstream import UpstreamParams
from alphapulse.runtime._websocket import SessionSettings, UpstreamRejected, UpstreamStale, run_websocket_session

__all__ = [
    "BREAKER_TRANSITIONS",
    "GAP_TRANSITIONS",
    "Backoff",
    "BreakerSettings",
    "BreakerState",
    "CircuitBreaker",
    "ControlError",
    "InputLink",
    "InputSpec",
    "NodeConfigError",
    "NodeContext",
    "NodeHost",
    "Overflow",
    "Publisher",
    "RetransmitBuffer",
    "SequenceTracker",
    "SessionSettings",
    "StalledWrites",
    "Subscription",
    "TapSummary",
    "TapView",
    "UpstreamEpochs",
    "UpstreamParams",
    "UpstreamRejected",
    "UpstreamStale",
    "address",
    "control_frame",
    "epoch_from_time",
    "format_message",
    "frames_in_chunks",
    "fsync_directory",
    "load_plan",
    "make_sequence",
    "merge_positions",
    "open_publisher",
    "peer_publishers",
    "positions_in_frame_files",
    "positions_of",
    "read_positions",
    "relay_domains",
    "report",
    "request",
    "request_async",
    "run_node_process",
    "run_websocket_session",
    "serve_control",
    "split_sequence",
    "start_listening",
    "subscribe_frame",
    "subscription",
    "write_file_atomically",
    "write_positions",
]
