"""Safe, reversible names for ``sku_id`` values in paths and URIs.

A ``sku_id`` may hold any language's characters, but it reaches file paths and object keys only
through :func:`encode_sku`: percent-encoding of UTF-8 bytes with only ``[A-Za-z0-9_-]`` kept literal
(``.`` and ``~`` are encoded too, so ``.``/``..`` can never form and names never start with a dot).
:func:`decode_sku` reverses it exactly. Values that would make unusable names are rejected up front
by :func:`check_sku_id` (the catalog turns that into an error row).
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote, unquote

MAX_SKU_CHARS = 200
MAX_ENCODED_BYTES = 240  # leaves room under the common 255-byte file-name limit


def encode_sku(sku_id: str) -> str:
    return quote(sku_id, safe="").replace(".", "%2E").replace("~", "%7E")


def decode_sku(name: str) -> str:
    return unquote(name, errors="strict")


def check_sku_id(sku_id: str) -> str | None:
    """Return why ``sku_id`` is unusable, or ``None`` if it is fine. Nothing is silently corrected."""
    if sku_id == "" or not sku_id.strip():
        return "empty"
    if sku_id != sku_id.strip():
        return "leading or trailing whitespace"
    bad = [c for c in sku_id if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")]
    if bad:
        return f"contains control or unassigned characters {''.join(repr(c) for c in bad[:3])}"
    if len(sku_id) > MAX_SKU_CHARS:
        return f"longer than {MAX_SKU_CHARS} characters ({len(sku_id)})"
    if len(encode_sku(sku_id)) > MAX_ENCODED_BYTES:
        return f"its encoded form is longer than {MAX_ENCODED_BYTES} bytes"
    return None
