"""Derivation of one partition: the raw batches of its hosts, in bus order, in; what each host's
engine learnt from each batch (edge mode's synthetic rows, `agent.edgemode.export_new`) out.

Each host has its own local Engine and ExportState, exactly as an EdgeAgent on that host would,
and a counter of the derived messages it produced (1, 2, 3, ...). Everything here is a pure
function of the partition's raw batches in order: a worker that takes a partition over replays
the batches already done through the same code and gets the same engines and the same derived
sequence numbers, so what it republishes is recognised downstream as a duplicate.

Raw batches are deduplicated by (host, stream, seq): a batch stored twice on the bus (two
gateways, or a resend outside JetStream's duplicate window) is applied once. A relay's batch
(a `host` column naming several hosts) is split by host, each host's rows in their order. A batch
an EdgeAgent shipped (its host already ran the core: `is_edge_shipment`) is forwarded unchanged,
so an edge-mode host costs a worker a counter, not an engine (a host should not mix the two).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from ..agent.edgemode import EDGE_SCHEMA, SYNTHETIC_TID_BASE, ExportState, export_new
from ..engine import Engine
from ..events import EventError
from ..server.gateway import Refusal, decode
from . import bus

log = logging.getLogger(__name__)


@dataclass
class Derived:
    """One message for LF_DERIVED."""

    subject: str
    host: str
    seq: int
    payload: bytes
    headers: dict[str, str]


@dataclass
class HostState:
    engine: Engine | None = None      # made at the host's first raw batch (none for an edge-mode host)
    export: ExportState = field(default_factory=ExportState)
    seq: int = 0              # derived messages produced for this host (in this partition)


def is_edge_shipment(table: pa.Table) -> bool:
    """A batch an EdgeAgent shipped (`agent.edgemode`): already only what its host learnt, in the
    form the authority merges; it is forwarded as it is, without a local engine."""
    if table.schema.names != EDGE_SCHEMA.names or not table.num_rows:
        return False
    return bool(pc.min(table.column("tid")).as_py() >= SYNTHETIC_TID_BASE)


def ipc_bytes(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _by_host(table: pa.Table, envelope: str) -> list[tuple[str, pa.Table]]:
    if "host" not in table.column_names:
        return [(envelope, table)]
    col = table.column("host")
    if col.null_count == table.num_rows:
        return [(envelope, table.drop_columns(["host"]))]
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    col = pc.fill_null(col, envelope)
    rest = table.drop_columns(["host"])
    names = col.to_pylist()
    order = list(dict.fromkeys(names))
    if len(order) == 1:
        return [(order[0], rest)]
    return [(h, rest.filter(pc.equal(col, h))) for h in order]


class Partition:
    """The derivation state of one partition."""

    def __init__(self, p: int) -> None:
        self.p = p
        self.hosts: dict[str, HostState] = {}
        self.marks: dict[tuple[str, str], int] = {}
        self.applied = 0
        self.duplicates = 0
        self.events = 0

    def apply(self, headers: dict[str, str], payload: bytes) -> list[Derived]:
        """One raw message of the partition -> the derived messages it makes (maybe none)."""
        host, stream, seq = headers.get(bus.H_HOST, ""), headers.get(bus.H_STREAM, ""), int(headers.get(bus.H_SEQ, "0"))
        key = (host, stream)
        mark = self.marks.get(key, 0)
        if seq <= mark:
            self.duplicates += 1
            return []
        if seq != mark + 1:
            log.warning("partition %d: host %r stream %r jumps from seq %d to %d", self.p, host, stream, mark, seq)
        self.marks[key] = seq
        try:
            table = decode(payload, 1 << 62)
        except Refusal as exc:
            log.error("partition %d: host %r stream %r seq %d is not Arrow IPC (%s): skipped", self.p, host, stream,
                      seq, exc.error)
            return []
        self.applied += 1
        self.events += table.num_rows
        out: list[Derived] = []
        if is_edge_shipment(table):
            st = self.hosts.get(host)
            if st is None:
                st = self.hosts[host] = HostState()
            st.seq += 1
            return [self._derived(host, st.seq, payload, host, stream, seq)]
        for h, rows in _by_host(table, host):
            st = self.hosts.get(h)
            if st is None:
                st = self.hosts[h] = HostState()
            if st.engine is None:
                st.engine = Engine()
            try:
                st.engine.ingest(rows, host=h)
            except EventError as exc:   # the gateway checked it: only an engine limit gets here
                log.error("partition %d: host %r stream %r seq %d: %s: skipped", self.p, h, stream, seq, exc)
                continue
            batch = export_new(st.engine, st.export)
            if batch is None:
                continue
            st.seq += 1
            out.append(self._derived(h, st.seq, ipc_bytes(batch), host, stream, seq))
        return out

    def _derived(self, h: str, dseq: int, payload: bytes, host: str, stream: str, seq: int) -> Derived:
        return Derived(subject=bus.derived_subject(self.p, h), host=h, seq=dseq, payload=payload,
                       headers={bus.MSG_ID: f"d/{self.p}/{h}/{dseq}", bus.H_HOST: h,
                                bus.H_STREAM: derived_stream(self.p), bus.H_SEQ: str(dseq),
                                bus.H_SOURCE: json.dumps([host, stream, seq])})


def derived_stream(p: int) -> str:
    """The stream id derived batches of partition `p` carry into the authority's gateway."""
    return f"lockfleet-derived-p{p}"
