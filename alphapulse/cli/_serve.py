"""Helpers shared by the subcommands that serve a local WebSocket in the foreground (sim, replay-server)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import trio

from alphapulse.cli import ExitCode


async def stop_after(duration: float, nursery: trio.Nursery) -> None:
    """Stop the server after ``--duration`` seconds; 0 leaves it serving until ^C."""
    if duration > 0:
        await trio.sleep(duration)
        nursery.cancel_scope.cancel()


def serve_in_foreground(main: Callable[[], Awaitable[None]], command: str) -> int:
    """Run ``main`` under trio: ^C is the normal way out, an OSError that reaches here (the port
    is taken, the address cannot be bound) a runtime failure, printed under ``command``'s name.
    trio's nurseries raise it inside an exception group, so the group is opened here."""
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        errors = _only_os_errors(exc)
        if errors is None:
            raise
        for error in errors:
            print(f"alphapulse {command}: {error}", file=sys.stderr)
        return ExitCode.RUNTIME
    return ExitCode.OK


def _only_os_errors(exc: BaseException) -> list[OSError] | None:
    """The OSErrors ``exc`` is or holds (in nested groups), when it holds nothing else; else None."""
    if isinstance(exc, OSError):
        return [exc]
    if not isinstance(exc, BaseExceptionGroup):
        return None
    matched, rest = exc.split(OSError)
    if matched is None or rest is not None:
        return None
    errors: list[OSError] = []
    stack: list[BaseException] = [matched]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseExceptionGroup):
            stack.extend(reversed(item.exceptions))
        else:
            errors.append(item)
    return errors
