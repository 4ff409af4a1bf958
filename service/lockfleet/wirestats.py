"""The service's counters on the wire: the dict that `Engine.stats()` and the service build, to and
from `StatsResponse` (proto/lockfleet/v1/lockfleet.proto), the one home of that mapping for the
server (`QueryService.Stats`) and its clients (`lockfleet stats`).

The graph's counters are typed fields named as the dict's keys; `alerts_<kind>` travel in the map
`alerts_by_kind`, `core_bytes_<table>` in `core_bytes_by_table`; `ingest` and `publishing` (whose
keys depend on the event log and the sinks configured) travel as `google.protobuf.Struct`; a counter
the engine grows before the message has a field for it travels in `other` rather than being lost
(tests/test_wire_contract.py checks that a real engine leaves `other` empty).

A Struct carries numbers as doubles: counters come back as ints when they are whole, so that
`stats_from_message(stats_to_message(d)) == d` for the service's dicts.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.struct_pb2 import Struct

from .v1 import lockfleet_pb2 as pb

_OPEN = ("ingest", "publishing", "other")   # the Struct fields
_BY_KIND = "alerts_by_kind"
_KIND_PREFIX = "alerts_"
_TABLE_PREFIX = "core_bytes_"
# the typed counters: every scalar field of StatsResponse
COUNTERS = tuple(f.name for f in pb.StatsResponse.DESCRIPTOR.fields
                 if f.type != FieldDescriptor.TYPE_MESSAGE)


def _plain(value: object) -> object:
    """numpy scalars (and arrays) as Python numbers and lists; anything else as text."""
    item = getattr(value, "tolist", None)
    return item() if callable(item) else str(value)


def _struct(data: dict[str, Any]) -> Struct:
    s = Struct()
    s.update(json.loads(json.dumps(data, default=_plain)))
    return s


def _whole(value: Any) -> Any:
    """A Struct's doubles back to ints where they are whole, recursively."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole(v) for v in value]
    return value


def stats_to_message(stats: dict[str, Any]) -> pb.StatsResponse:
    """The service's stats dict (Engine.stats() plus `ingest` and `publishing`) as a StatsResponse."""
    msg = pb.StatsResponse()
    other: dict[str, Any] = {}
    for key, value in stats.items():
        if key in COUNTERS:
            setattr(msg, key, int(value))
        elif key in ("ingest", "publishing"):
            if value is not None:
                getattr(msg, key).CopyFrom(_struct(value))
        elif key.startswith(_KIND_PREFIX) and isinstance(value, int) and not isinstance(value, bool):
            msg.alerts_by_kind[key[len(_KIND_PREFIX):]] = value
        elif key.startswith(_TABLE_PREFIX) and isinstance(value, int) and not isinstance(value, bool):
            msg.core_bytes_by_table[key[len(_TABLE_PREFIX):]] = value
        else:
            other[key] = value
    if other:
        msg.other.CopyFrom(_struct(other))
    return msg


def stats_from_message(msg: pb.StatsResponse) -> dict[str, Any]:
    """A StatsResponse as the dict `lockfleet stats --json` prints (the service's own keys)."""
    out: dict[str, Any] = {name: getattr(msg, name) for name in COUNTERS}
    out.update({f"{_KIND_PREFIX}{kind}": n for kind, n in msg.alerts_by_kind.items()})
    out.update({f"{_TABLE_PREFIX}{table}": n for table, n in msg.core_bytes_by_table.items()})
    for name in _OPEN:
        if msg.HasField(name):
            value = _whole(json_format.MessageToDict(getattr(msg, name)))
            if name == "other":
                out.update(value)
            else:
                out[name] = value
    return dict(sorted(out.items()))
