"""JSON encoding shared by the formats: orjson, with the standard library as
the fallback for values orjson refuses (integers beyond 64 bits)."""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(document: Any) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:
        try:
            return json.dumps(
                document, ensure_ascii=False, separators=(",", ":")
            ).encode()
        except RecursionError:
            raise ValueError("nested too deeply to encode") from None
