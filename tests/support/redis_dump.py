"""What a Redis database holds, for the tests that prove no secret reaches it."""
from __future__ import annotations

import contextlib
import zlib

import pytest
from redis import Redis


def _maybe_decompressed(value: bytes) -> list[bytes]:
    out = [value]
    with contextlib.suppress(zlib.error, TypeError):
        out.append(zlib.decompress(value))
    return out


def redis_dump(url: str) -> dict[str, list[bytes]]:
    """Every key of the test Redis database with all its values; zlib-compressed values (RQ job data) unpacked."""
    conn = Redis.from_url(url)
    dump: dict[str, list[bytes]] = {}
    try:
        for key in conn.scan_iter(count=1000):
            kind = conn.type(key).decode()
            values: list[bytes] = [key]
            if kind == "string":
                values.append(conn.get(key) or b"")
            elif kind == "hash":
                for field, value in conn.hgetall(key).items():
                    values += [field, value]
            elif kind == "list":
                values += conn.lrange(key, 0, -1)
            elif kind == "set":
                values += list(conn.smembers(key))
            elif kind == "zset":
                values += [member for member, _ in conn.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in conn.xrange(key):
                    for field, value in fields.items():
                        values += [field, value]
            else:
                pytest.fail(f"Redis key {key!r} has a type this dump does not read: {kind}")
            as_bytes = (v if isinstance(v, bytes) else str(v).encode() for v in values)
            dump[key.decode("utf-8", "replace")] = [u for v in as_bytes for u in _maybe_decompressed(v)]
    finally:
        conn.close()
    return dump


def redis_plaintext(url: str) -> bytes:
    """Every key and value of the database in one blob, RQ's compressed job payloads unpacked."""
    return b"\n".join(value for values in redis_dump(url).values() for value in values)
