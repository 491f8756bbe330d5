"""A finished W&B offline run's .wandb file read in this process, as `wandb-core leet inspect` reads it.

Why: each `leet inspect` is a new wandb-core process, and its start (Go runtime and package initialisation)
costs ~13-17 ms of CPU before the file is opened: 10,000 runs cannot be read in a minute on 2 cores that way.
The file is W&B's transaction log: LevelDB's log format (32 KiB blocks of CRC-32-checked chunks) holding
W&B's own protobuf `Record`s (wandb.proto, from the installed wandb package), so reading it here needs no
format of our own.

Only what is certain is read here: a complete file whose every chunk checks, of a run that exited 0, with
records of known kinds and plain top-level keys. Anything else (a run still running, failed or killed, a
file cut off or corrupt, a removed key, a nested key, a value JSON cannot hold, a newer log version) raises
NotHere, and the caller asks W&B's own reader, whose answer (state, error message) is then the report's.
Values come out as leet's JSON gives them: numbers through float64 (1.0 reads as 1), keys sorted.
"""

from __future__ import annotations

import json
import math
import struct
import zlib

_HEADER = b":W&B\xe1\xbe\x00"  # ident, magic 0xBEE1, log version 0: what wandb-core 0.31 writes and reads
_BLOCK = 32 * 1024
_CHUNK = struct.Struct("<IHB")  # CRC-32 of type + data, data length, type
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4
# Records that do not bear on the run's id, name, state, config, summary or history.
_INERT = {"header", "environment", "files", "telemetry", "metric", "stats", "output", "output_raw", "final",
          "footer", "artifact", "use_artifact", "alert", "tbrecord"}


class NotHere(Exception):
    """The file is not certain to read here as W&B's reader reads it: ask W&B's reader."""


def _chunks(f):
    """(type, data) of each chunk, block by block: memory stays one block and one record."""
    block = f.read(_BLOCK)
    if not block.startswith(_HEADER):
        raise NotHere("not a version-0 W&B log")
    pos = len(_HEADER)
    while block:
        if len(block) - pos < _CHUNK.size:
            if block[pos:].strip(b"\0") or (len(block) < _BLOCK and pos < len(block)):
                raise NotHere("cut off inside a chunk header")
            block, pos = f.read(_BLOCK), 0
            continue
        crc, length, kind = _CHUNK.unpack_from(block, pos)
        data = block[pos + _CHUNK.size:pos + _CHUNK.size + length]
        if len(data) != length or zlib.crc32(data, zlib.crc32(bytes([kind]))) != crc:
            raise NotHere("a chunk is cut off or does not check")
        pos += _CHUNK.size + length
        yield kind, data


def records(path: str):
    """W&B's protobuf Records of the file, in the order written."""
    from wandb.proto import wandb_internal_pb2 as pb  # wandb only when a run is read: the contract stays light

    parts: list[bytes] = []
    with open(path, "rb") as f:
        for kind, data in _chunks(f):
            if kind == _FULL and not parts:
                parts = [data]
            elif kind == _FIRST and not parts:
                parts = [data]
                continue
            elif kind in (_MIDDLE, _LAST) and parts:
                parts.append(data)
                if kind == _MIDDLE:
                    continue
            else:
                raise NotHere(f"chunk of type {kind} out of order")
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record
    if parts:
        raise NotHere("cut off inside a record")


def _key(item) -> str:
    path = item.nested_key
    if not path:
        return item.key
    if len(path) != 1 and path[0] != "_wandb":
        raise NotHere(f"nested key {'.'.join(path)}")
    return path[0]


def _as_leet(value):
    """The value as leet's JSON gives it: Go's float64 numbers (integral ones print without a point), sorted keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        f = float(value)
        if not math.isfinite(f):
            raise NotHere("a value JSON cannot hold")
        return int(f) if f.is_integer() and abs(f) < 1e21 else f
    if isinstance(value, list):
        return [_as_leet(v) for v in value]
    return {k: _as_leet(value[k]) for k in sorted(value)}


def _apply(into: dict, record) -> None:
    """A config or summary record's updates, top-level keys only; W&B's reader drops `_wandb` anyway."""
    if len(record.remove):
        raise NotHere("a removed key")
    for item in record.update:
        into[_key(item)] = item.value_json  # decoded once, at the end: most are overwritten


def _decoded(raw: dict) -> dict:
    return {k: _as_leet(json.loads(raw[k])) for k in sorted(raw) if k != "_wandb"}


def summary(path: str) -> dict:
    """{run_id, name, state, config, summary} as `leet inspect --summary --json` gives them."""
    run, exit_code, config, summ = None, None, {}, {}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            if run is not None or len(record.run.summary.update) or len(record.run.summary.remove):
                raise NotHere("a second run record, or one with a summary")
            run = record.run
            _apply(config, run.config)
        elif kind == "config":
            _apply(config, record.config)
        elif kind == "summary":
            _apply(summ, record.summary)
        elif kind == "exit":
            exit_code = record.exit.exit_code
        elif kind != "history" and kind not in _INERT:
            raise NotHere(f"a {kind} record")
    if run is None or exit_code != 0:
        raise NotHere("no run record, or the run did not exit 0")
    return {"run_id": run.run_id, "name": run.display_name, "state": "finished", "config": _decoded(config),
            "summary": _decoded(summ)}


def history(path: str) -> list[dict]:
    """The logged rows, as the `item`s of `leet inspect --json`'s history records."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") == "history":
            rows.append(_decoded({_key(item): item.value_json for item in record.history.item}))
    return rows
