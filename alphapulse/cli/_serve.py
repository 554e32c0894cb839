"""Helpers shared by the subcommands that serve a local WebSocket in the foreground (sim, replay-server)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from alphapulse.cli import ExitCode


async def stop_after(duration: float, nursery: trio.Nursery) -> None:
    """Stop the server after ``--duration`` seconds; 0 leaves it serving until ^C."""
    if duration > 0:
        await trio.sleep(duration)
        nursery.cancel_scope.cancel()


def serve_in_foreground(main: Callable[[], Awaitable[None]], command: str) -> int:
    """Run ``main`` under trio: ^C is the normal way out, an OSError that reaches here a runtime
    failure, printed under ``command``'s name."""
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"alphapulse {command}: {exc}")
        return ExitCode.RUNTIME
    return ExitCode.OK
