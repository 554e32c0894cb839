"""Secrets: params declared ``secret=True`` must be a ``${VAR}``; other literals that look like
credentials are worth a warning, because topology files get committed."""

from __future__ import annotations

import math
import re
from collections import Counter

_SECRET_NAME = re.compile(r"(key|secret|token|passw(or)?d|credential|auth)", re.IGNORECASE)
_NOT_SECRET_NAME = re.compile(r"(^|_)(key_?id|keys|name|file|path|url|endpoint)$", re.IGNORECASE)
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9+/=_\-]{20,}$")


def entropy_bits_per_char(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def looks_like_token(text: str) -> bool:
    """A long random-looking string: API keys, bearer tokens, private keys.

    Hex addresses and hashes (``0x…``), URLs, paths and instrument names are not tokens.
    """
    if text.startswith("0x") or not _TOKEN_CHARS.match(text) or _looks_like_path(text):
        return False
    classes = sum(bool(re.search(p, text)) for p in ("[a-z]", "[A-Z]", "[0-9]"))
    return classes >= 2 and entropy_bits_per_char(text) >= 3.5


def _looks_like_path(text: str) -> bool:
    """``/var/data/x``, ``../recordings/demo``: absolute or relative, or several short segments."""
    if text.startswith(("/", "./", "../", "~")):
        return True
    parts = text.split("/")
    return len(parts) >= 3 and all(0 < len(p) <= 24 and re.fullmatch(r"[A-Za-z0-9_.\-]+", p) for p in parts)


def secret_name(key: str) -> bool:
    """Whether a param name suggests it holds a credential."""
    return bool(_SECRET_NAME.search(key)) and not _NOT_SECRET_NAME.search(key)


def suggested_env_name(node: str, field: str) -> str:
    return re.sub(r"[^A-Z0-9_]", "_", f"{node}_{field}".upper())
