#!/usr/bin/env python3
"""Bytes on the wire per million lock events: raw events vs edge mode.

    .venv/bin/python benchmarks/bench_edge_mode.py                 # W1-like: 30k new edges, then 2M repeat events
    .venv/bin/python benchmarks/bench_edge_mode.py --repeats 250000 --flush-every 4

The workload is W1's shape from `workloads.py` (5,000 classes in 12 layers, 30,000 distinct edges,
Zipf(1.1) repeats, 20 back edges closing cycles) with fewer repeats (`--repeats` edges, 4 events
each). As events (`workloads.iter_event_batches`): batches of 65,536 rows.

Raw mode, what an Agent ships: every event batch as Arrow IPC stream bytes (schema + batch, one
message per batch as PushRequest.arrow_ipc carries it), `lock` dictionary-encoded per batch:
- "raw 4 columns": only the required columns (ts_ns, tid, op, lock), 65,536-row batches;
- "raw Agent wire": the Agent's wire schema (10 columns: mode/subclass/instance/irq zero,
  site/task null dictionaries), cut in the Agent's default 8,192-row batches;
each uncompressed (the Agent today) and with Arrow IPC zstd buffer compression (pyarrow's
`IpcWriteOptions(compression="zstd")`; the service does not need to accept it today: hypothetical).

Edge mode: a local Engine ingests each batch; every `--flush-every` batches `export_new` makes the
shipment, serialized the same ways (uncompressed, zstd), with and without count deltas of known
edges (`ship_counts`). A central Engine fed only the shipments is checked to hold the same edges
and as many cycles as the local one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads

from lockfleet import Engine
from lockfleet.agent.edgemode import ExportState, export_new

_DICT = pa.dictionary(pa.int32(), pa.string())
_ZSTD = pa.ipc.IpcWriteOptions(compression="zstd") if pa.Codec.is_available("zstd") else None


def ipc_bytes(batch: pa.RecordBatch, options: pa.ipc.IpcWriteOptions | None = None) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=options) as w:
        w.write_batch(batch)
    return sink.getvalue().size


def agent_wire(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The 4-column workload batch in the Agent's wire schema (encoding.WIRE_SCHEMA)."""
    n = batch.num_rows
    lock = batch.column("lock")
    zeros8 = pa.array(np.zeros(n, np.uint8))
    null_dict = pa.DictionaryArray.from_arrays(pa.nulls(n, pa.int32()), pa.array([], pa.string()))
    arrays = [batch.column("ts_ns"), batch.column("tid"), batch.column("op"), lock, zeros8, zeros8,
              pa.array(np.zeros(n, np.uint64)), zeros8, null_dict, null_dict]
    names = ["ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site", "task"]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def recut(batch: pa.RecordBatch, rows: int) -> list[pa.RecordBatch]:
    """Slices of `rows` rows, each with its own dictionary of the names it uses (as the Agent cuts)."""
    out = []
    for lo in range(0, batch.num_rows, rows):
        part = batch.slice(lo, rows)
        lock = part.column("lock").dictionary_decode().dictionary_encode()
        out.append(pa.RecordBatch.from_arrays([lock if f.name == "lock" else part.column(f.name)
                                               for f in part.schema], names=part.schema.names))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=500_000, help="repeat edges after the new ones (4 events each)")
    ap.add_argument("--distinct", type=int, default=30_000, help="distinct edges (W1: 30,000)")
    ap.add_argument("--flush-every", type=int, default=1, help="ship after every N batches of 65,536 events")
    args = ap.parse_args()

    t0 = time.perf_counter()
    wl = workloads.make("W1", n_repeats=args.repeats, n_distinct=args.distinct)
    edges = np.concatenate([p.edges for p in wl.phases])
    batches = workloads.to_event_batches(edges, wl.n_classes)
    n_events = workloads.events_count(batches)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    raw = {"raw 4 columns": [0, 0], "raw Agent wire": [0, 0]}
    for b in batches:
        raw["raw 4 columns"][0] += ipc_bytes(b)
        raw["raw 4 columns"][1] += ipc_bytes(b, _ZSTD) if _ZSTD else 0
        for part in recut(agent_wire(b), 8192):
            raw["raw Agent wire"][0] += ipc_bytes(part)
            raw["raw Agent wire"][1] += ipc_bytes(part, _ZSTD) if _ZSTD else 0
    t_raw = time.perf_counter() - t0

    results, steady_results, split = {}, {}, {}
    # steady state: the batches after the one holding the last event of the new-edge phase
    first_steady = (4 * wl.phases[0].edges.shape[0]) // (workloads.ROWS_PER_BATCH // 4 * 4) + 1
    for ship_counts in (True, False):
        t0 = time.perf_counter()
        local, central, state = Engine(), Engine(), ExportState(ship_counts=ship_counts)
        sent, sent_z, shipments, rows = 0, 0, 0, 0
        steady, steady_z, steady_events = 0, 0, 0
        t_local = t_export = t_central = 0.0           # agent side: local + export; central side
        s_local = s_export = 0.0                       # the same, over the steady-state batches
        for i, b in enumerate(batches):
            if i >= first_steady:
                steady_events += b.num_rows
            c0 = time.perf_counter()
            local.ingest(b, host="k1")
            c1 = time.perf_counter()
            t_local += c1 - c0
            s_local += (c1 - c0) if i >= first_steady else 0.0
            if (i + 1) % args.flush_every and i + 1 != len(batches):
                continue
            c0 = time.perf_counter()
            out = export_new(local, state)
            c1 = time.perf_counter()
            t_export += c1 - c0
            s_export += (c1 - c0) if i >= first_steady else 0.0
            if out is None:
                continue
            shipments += 1
            rows += out.num_rows
            sent += ipc_bytes(out)
            sent_z += ipc_bytes(out, _ZSTD) if _ZSTD else 0
            c0 = time.perf_counter()
            central.ingest(out, host="k1")
            t_central += time.perf_counter() - c0
            if i >= first_steady:
                steady += ipc_bytes(out)
                steady_z += ipc_bytes(out, _ZSTD) if _ZSTD else 0
        assert sorted(central.edges()) == sorted(local.edges()), "central edges differ"
        cyc_l = sum(a.kind == "circular" for a in local.alerts())
        cyc_c = sum(a.kind == "circular" for a in central.alerts())
        assert cyc_l == cyc_c, (cyc_l, cyc_c)
        name = "edge mode, with count deltas" if ship_counts else "edge mode, new edges only"
        results[name] = (sent, sent_z, shipments, rows, time.perf_counter() - t0, cyc_c)
        steady_results[name] = (steady, steady_z, steady_events)
        split[name] = (t_local, t_export, t_central, s_local, s_export)

    per_m = 1e6 / n_events
    print(f"workload: W1 shape, {wl.n_classes} classes, {wl.n_edges} distinct edges, {args.repeats} repeat edges; "
          f"{n_events:,} events in {len(batches)} batches of <= 65,536 (generated in {t_gen:.1f} s); "
          f"ship every {args.flush_every} batch(es)")
    print(f"compression: {'Arrow IPC zstd (pyarrow ' + pa.__version__ + ')' if _ZSTD else 'zstd not available'}")
    print(f"{'mode':34} {'bytes/M events':>15} {'zstd bytes/M':>14}  notes")
    base = raw["raw Agent wire"]
    for name, (b, z) in raw.items():
        print(f"{name:34} {b * per_m:15,.0f} {z * per_m:14,.0f}  ({t_raw:.1f} s to serialize both)")
    for name, (b, z, ships, rws, secs, cyc) in results.items():
        print(f"{name:34} {b * per_m:15,.0f} {z * per_m:14,.0f}  {ships} shipments, {rws:,} rows, {cyc} cycles "
              f"found centrally, {secs:.1f} s (local engine + export + central)")
    print("ratio raw Agent wire / edge mode (uncompressed, zstd):")
    for name, (b, z, *_rest) in results.items():
        print(f"  {name:32} {base[0] / b:8.1f}x {base[1] / z if z else float('nan'):8.1f}x")
    b4 = raw["raw 4 columns"]
    print("ratio raw 4 columns / edge mode (uncompressed, zstd):")
    for name, (b, z, *_rest) in results.items():
        print(f"  {name:32} {b4[0] / b:8.1f}x {b4[1] / z if z else float('nan'):8.1f}x")
    print("where the time goes (agent side = local engine + export_new; central side = the central engine's "
          "ingest of the shipments; ns per event of the whole workload / of the steady state):")
    for name, (tl, te, tc, sl, se) in split.items():
        sev = steady_results[name][2] or 1
        print(f"  {name:32} agent {tl + te:6.2f} s = local {tl:.2f} + export {te:.2f} "
              f"({(tl + te) / n_events * 1e9:5.0f} ns/event; steady {(sl + se) / sev * 1e9:5.0f} ns/event = "
              f"local {sl / sev * 1e9:.0f} + export {se / sev * 1e9:.0f}); central {tc:6.2f} s")
    print("steady state (repeat phase only, batches after the last new-phase event; its 10 back edges included;"
          " meaningful with --flush-every 1):")
    for name, (b, z, ev) in steady_results.items():
        pm = 1e6 / ev if ev else 0
        print(f"  {name:32} {b * pm:15,.0f} {z * pm:14,.0f}  bytes/M events over {ev:,} events; raw Agent wire "
              f"{base[0] * per_m:,.0f} / zstd {base[1] * per_m:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
