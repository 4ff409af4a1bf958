"""What `lockfleet analyze` reads, and in which order.

A PATH is one of:

- a service data dir (it has `archive/` or `log/`): its Parquet archive, then the log segments the
  archive does not cover yet, so that nothing the service acknowledged is missed. The archive
  covers the segments up to `archive/_state.json`'s `archived_through_segment` (the archiver writes
  it once every part of a segment is in place; without it, up to the highest part's segment);
  parts of a later segment are a compaction in progress and that segment is read from the log;
- an archive dir (`day=YYYY-MM-DD/part-<segment-seq>-<n>.parquet`, or such part files anywhere
  below it): every part file, ordered by segment seq, then day, then n, rows in file order: the
  order the service applied them in (its log order), so the same findings come out with the same
  ids. A segment whose rows the archiver split over several days is in log order only if its parts
  carry the order columns `lsn` and `row` (then they are merged back by them); otherwise its days
  are applied one after the other (`Plan.unordered_segments` names such segments);
- a log dir (`seg-*.log` files): its records in log order;
- any other dir: the event files below it (`.parquet`, `.arrow`, `.arrows`, `.ipc`, `.feather`),
  sorted by path;
- a file: Parquet or Arrow IPC (file or stream format) in the schema of docs/contract.md section 2, or a log segment.

An event file that is not a service archive part is one host's stream applied in row order; its
rows' host is their `host` column where present and not null, else the file's host: a `host=NAME`
directory above it, else the file name without its suffix. PATHs are applied in the order given.

`Selection` narrows what is read: `since <= ts_ns < until` (UTC; files and row groups whose ts_ns
statistics lie outside are never read) and a set of hosts.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InputError
from ..store import segment_log

CHUNK_ROWS = 65536
EVENT_COLUMNS = ("ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq", "site", "task", "host")
STRING_COLUMNS = ("lock", "site", "task", "host")
ORDER_COLUMNS = ("lsn", "row")      # optional in archive parts: the row's log position (record lsn, row in it)
ARCHIVE_STATE = "_state.json"       # {"archived_through_segment": N}, written by the service's archiver
EVENT_SUFFIXES = (".parquet", ".arrow", ".arrows", ".ipc", ".feather")
_PART = re.compile(r"^part-(\d+)-(\d+)\.parquet$")
_SEGMENT = re.compile(r"^seg-(\d+)\.log$")
_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"


class ScanError(InputError):
    """A PATH that is missing, unreadable, or not lock events; the message names it."""


# ---------------------------------------------------------------------------------------------- selection

def parse_time(text: str, option: str = "time") -> int:
    """An ISO date or date-time as ns since the epoch; naive times are UTC; a bare date is its
    midnight (UTC)."""
    s = text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
            dt = datetime.combine(date.fromisoformat(s), datetime.min.time(), tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=UTC)
    except ValueError:
        raise ScanError(f"{option} {text!r} is not an ISO date or time (e.g. 2025-01-31 or "
                        "2025-01-31T12:00:00Z)") from None
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


@dataclass(frozen=True)
class Selection:
    """Rows kept: since <= ts_ns < until, host in hosts (None: any)."""

    since: int | None = None
    until: int | None = None
    hosts: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.since is None and self.until is None and self.hosts is None

    def overlaps(self, lo: int | None, hi: int | None) -> bool:
        """Can rows with lo <= ts_ns <= hi be selected? (None: unknown)"""
        if lo is None or hi is None:
            return True
        if self.since is not None and hi < self.since:
            return False
        if self.until is not None and lo >= self.until:
            return False
        return True

    def mask(self, batch: pa.RecordBatch, default_host: str) -> pa.Array | None:
        """Boolean mask of the rows kept, None when every row is."""
        mask = None
        if self.since is not None or self.until is not None:
            ts = batch.column("ts_ns")
            if self.since is not None:
                mask = pc.greater_equal(ts, self.since)
            if self.until is not None:
                m = pc.less(ts, self.until)
                mask = m if mask is None else pc.and_(mask, m)
        if self.hosts is not None:
            m = host_mask(batch, default_host, self.hosts)
            mask = m if mask is None else pc.and_(mask, m)
        if mask is not None and mask.null_count:
            mask = pc.fill_null(mask, False)
        return mask


def host_mask(batch: pa.RecordBatch, default_host: str, hosts: frozenset[str]) -> pa.Array:
    names = batch.schema.names
    if "host" not in names:
        return pa.array(np.full(batch.num_rows, default_host in hosts))
    col = batch.column("host")
    values = pa.array(sorted(hosts), pa.utf8())
    if pa.types.is_dictionary(col.type):
        hit = pc.is_in(col.dictionary.cast(pa.utf8()), value_set=values)
        m = pc.take(hit, col.indices)
    else:
        m = pc.is_in(col.cast(pa.utf8()), value_set=values)
    # a null host is the stream's host
    return pc.if_else(pc.is_null(col), default_host in hosts, pc.fill_null(m, False))


# ---------------------------------------------------------------------------------------------- sources

@dataclass
class Source:
    """One file to apply, whole, in row order."""

    kind: str                   # "parquet", "ipc_file", "ipc_stream" or "log"
    path: Path
    host: str = ""              # rows without a host are this host's ("" for a log: each record says)
    archive: bool = False       # a service archive part (part-<seg>-<n>.parquet)
    rows: int | None = None     # known from metadata (None for logs and IPC streams)
    ts_min: int | None = None
    ts_max: int | None = None
    row_groups: list[int] | None = None  # Parquet: the row groups that can hold selected rows
    columns: tuple[str, ...] = ()
    paths: list[Path] = field(default_factory=list)   # parquet_merged: the parts to sort by (lsn, row)

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass
class Plan:
    """The sources of every PATH, in apply order, and what was skipped."""

    sources: list[Source] = field(default_factory=list)
    skipped_segments: int = 0     # log segments already in the archive
    pruned_files: int = 0         # files whose ts_ns range lies outside the selection
    ignored_parts: int = 0        # parts of a segment whose compaction had not finished (read from the log)
    # segments whose parts span several days without order columns: applied day by day, which is
    # the log order only if no batch of the segment has rows of two days
    unordered_segments: list[int] = field(default_factory=list)

    @property
    def known_rows(self) -> int:
        return sum(s.rows or 0 for s in self.sources)

    @property
    def files(self) -> int:
        return len(self.sources)


def plan(paths: list[str | Path], selection: Selection = Selection()) -> Plan:
    """Every source of `paths`, in apply order; raises ScanError for a PATH it cannot use."""
    out = Plan()
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ScanError(f"{path}: no such file or directory")
        if path.is_dir():
            if (path / "archive").is_dir() or (path / "log").is_dir():
                archive = path / "archive"
                parts = _archive_parts(archive) if archive.is_dir() else []
                # the segments the service finished archiving (all their parts written); parts of a
                # segment past it are a compaction in progress: that segment is read from the log
                through = _archived_through(archive)
                if through is None:
                    through = max((seg for seg, _d, _n, _p in parts), default=0)
                _add_archive(out, parts, selection, through)
                if (path / "log").is_dir():
                    for seg, seg_path in _segments(path / "log"):
                        if seg <= through:
                            out.skipped_segments += 1
                            continue
                        out.sources.append(Source("log", seg_path))
            elif any(path.glob("seg-*.log")):
                out.sources += [Source("log", sp) for _seg, sp in _segments(path)]
            elif (parts := _archive_parts(path)):
                _add_archive(out, parts, selection, None)
            else:
                files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in EVENT_SUFFIXES)
                if not files:
                    raise ScanError(f"{path}: no event files (Parquet or Arrow IPC), archive or log segments in it")
                for f in files:
                    _add(out, _file_source(f), selection)
        else:
            _add(out, _file_source(path), selection)
    return out


def _archived_through(archive: Path) -> int | None:
    try:
        return int(json.loads((archive / ARCHIVE_STATE).read_text())["archived_through_segment"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _add_archive(out: Plan, parts: list[tuple[int, str, int, Path]], selection: Selection,
                 through: int | None) -> None:
    """A segment's parts in (day, n) order; when they span several days and carry the order
    columns (lsn, row), one merged source sorted back into log order."""
    by_seg: dict[int, list[tuple[str, Path]]] = {}
    for seg, day, _n, part in parts:
        by_seg.setdefault(seg, []).append((day, part))
    for seg, group in by_seg.items():
        if through is not None and seg > through:
            out.ignored_parts += len(group)
            continue
        sources = [_parquet_source(part, archive=True) for _day, part in group]
        if len({day for day, _p in group}) > 1:
            if all(set(ORDER_COLUMNS) <= set(src.columns) for src in sources):
                known = [x for src in sources for x in (src.ts_min, src.ts_max)]
                merged = Source("parquet_merged", sources[0].path, archive=True,
                                rows=sum(src.rows or 0 for src in sources),
                                ts_min=_bound(min, known), ts_max=_bound(max, known),
                                columns=sources[0].columns, paths=[src.path for src in sources])
                _add(out, merged, selection)
                continue
            out.unordered_segments.append(seg)
        for src in sources:
            _add(out, src, selection)


def _add(out: Plan, src: Source, selection: Selection) -> None:
    if src.kind in ("parquet", "parquet_merged") and not selection.overlaps(src.ts_min, src.ts_max):
        out.pruned_files += 1
        return
    if src.kind == "parquet" and (selection.since is not None or selection.until is not None):
        src.row_groups = _row_groups(src, selection)
        if not src.row_groups:
            out.pruned_files += 1
            return
    out.sources.append(src)


def _archive_parts(root: Path) -> list[tuple[int, str, int, Path]]:
    """(segment seq, day, n, path) of every part file, in apply order: by segment, then day, then n."""
    parts = []
    for f in root.rglob("part-*.parquet"):
        m = _PART.match(f.name)
        if m:
            day = f.parent.name[4:] if f.parent.name.startswith("day=") else ""
            parts.append((int(m.group(1)), day, int(m.group(2)), f))
    parts.sort(key=lambda t: (t[0], t[1], t[2], str(t[3])))
    return parts


def _segments(log_dir: Path) -> list[tuple[int, Path]]:
    segs = []
    for f in log_dir.glob("seg-*.log"):
        m = _SEGMENT.match(f.name)
        if m:
            segs.append((int(m.group(1)), f))
    segs.sort()
    return segs


def _default_host(path: Path) -> str:
    for parent in path.parents:
        if parent.name.startswith("host=") and len(parent.name) > 5:
            return parent.name[5:]
    return path.name.split(".")[0] or path.name


def _file_source(path: Path) -> Source:
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ScanError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if head[:4] == _PARQUET_MAGIC:
        return _parquet_source(path, archive=bool(_PART.match(path.name)))
    if head[:8] == segment_log.MAGIC:
        return Source("log", path)
    if head[:6] == _ARROW_FILE_MAGIC:
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path)))
            schema, rows = reader.schema, sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
        except (pa.ArrowException, OSError) as exc:
            raise ScanError(f"{path}: damaged Arrow IPC file: {_one_line(exc)}") from None
        _check_schema(path, schema)
        return Source("ipc_file", path, host=_default_host(path), rows=rows, columns=tuple(schema.names))
    try:
        with pa.ipc.open_stream(pa.memory_map(str(path))) as reader:
            schema = reader.schema
    except (pa.ArrowException, OSError):
        raise ScanError(f"{path}: not a Parquet or Arrow IPC file, nor a lockfleet log segment") from None
    _check_schema(path, schema)
    return Source("ipc_stream", path, host=_default_host(path), columns=tuple(schema.names))


def _parquet_source(path: Path, archive: bool) -> Source:
    try:
        md = pq.read_metadata(path)
        schema = md.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise ScanError(f"{path}: damaged Parquet file: {_one_line(exc)}") from None
    _check_schema(path, schema)
    lo = hi = None
    col = schema.get_field_index("ts_ns")
    try:
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(col).statistics
            if st is None or not st.has_min_max:
                lo = hi = None
                break
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
    except (pa.ArrowException, ValueError):
        lo = hi = None
    return Source("parquet", path, host="" if archive else _default_host(path), archive=archive, rows=md.num_rows,
                  ts_min=lo, ts_max=hi, columns=tuple(schema.names))


def _row_groups(src: Source, selection: Selection) -> list[int]:
    md = pq.read_metadata(src.path)
    col = md.schema.to_arrow_schema().get_field_index("ts_ns")
    keep, rows = [], 0
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(col).statistics
        if st is None or not st.has_min_max or selection.overlaps(st.min, st.max):
            keep.append(i)
            rows += md.row_group(i).num_rows
    src.rows = rows
    return keep


def _check_schema(path: Path, schema: pa.Schema) -> None:
    missing = [c for c in ("ts_ns", "tid", "op", "lock") if c not in schema.names]
    if missing:
        raise ScanError(f"{path}: not lock events: column(s) {', '.join(missing)} missing "
                        "(required: ts_ns, tid, op, lock)")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class Chunk:
    """Rows to apply in order: `batch` (event columns only), with `host` for rows without one."""

    batch: pa.RecordBatch
    host: str
    source: Source
    raw_rows: int               # rows read, before the selection


def read_log_segment(path: Path) -> Iterator[segment_log.Record]:
    """The records of one segment file, read-only, in log order. A torn tail (the active segment
    of a live service, or one a crash left) ends the segment; nothing is written or cut."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data[:len(segment_log.MAGIC)] != segment_log.MAGIC:
        raise ScanError(f"{path}: not a lockfleet log segment (bad header)")
    records, _good = segment_log.scan(data)
    yield from records


def _select_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    names = batch.schema.names
    keep = [n for n in EVENT_COLUMNS if n in names]
    return batch if keep == names else batch.select(keep)


OnError = Callable[[Source, str], None]   # hears of a log record that cannot be decoded


def _bound(pick: Callable[[list[int]], int], values: list[int | None]) -> int | None:
    """min or max of the files' bounds, or None when a file does not know its own."""
    known = [v for v in values if v is not None]
    return pick(known) if len(known) == len(values) and known else None


def chunks(p: Plan, selection: Selection = Selection(), chunk_rows: int = CHUNK_ROWS,
           on_error: OnError | None = None) -> Iterator[Chunk]:
    """Every selected row of the plan, in apply order, as Arrow record batches (zero-copy from
    the files: dictionary columns stay dictionaries). `on_error(source, message)` hears about a log
    record that cannot be decoded (skipped, as the service's replay skips it)."""
    for src in p.sources:
        for batch, host in _read(src, chunk_rows, on_error):
            raw = batch.num_rows
            batch = _select_columns(batch)
            mask = selection.mask(batch, host) if not selection.everything else None
            if mask is not None:
                batch = batch.filter(mask)
            yield Chunk(batch, host, src, raw)


def _read(src: Source, chunk_rows: int,
          on_error: OnError | None) -> Iterator[tuple[pa.RecordBatch, str]]:
    try:
        if src.kind == "parquet":
            cols = [c for c in EVENT_COLUMNS if c in src.columns]
            pf = pq.ParquetFile(src.path, read_dictionary=[c for c in STRING_COLUMNS if c in cols])
            for b in pf.iter_batches(batch_size=chunk_rows, columns=cols, row_groups=src.row_groups,
                                     use_threads=True):
                yield b, src.host
        elif src.kind == "parquet_merged":
            cols = [c for c in EVENT_COLUMNS if c in src.columns]
            tables = [pq.read_table(p, columns=[*cols, *ORDER_COLUMNS]) for p in src.paths]
            table = pa.concat_tables(tables, promote_options="default")
            table = table.sort_by([(c, "ascending") for c in ORDER_COLUMNS]).select(cols)
            for b in table.to_batches(max_chunksize=chunk_rows):
                yield b, src.host
        elif src.kind == "ipc_file":
            reader = pa.ipc.open_file(pa.memory_map(str(src.path)))
            for i in range(reader.num_record_batches):
                yield from _split(reader.get_batch(i), chunk_rows, src.host)
        elif src.kind == "ipc_stream":
            with pa.ipc.open_stream(pa.memory_map(str(src.path))) as reader:
                for b in reader:
                    yield from _split(b, chunk_rows, src.host)
        else:
            for rec in read_log_segment(src.path):
                try:
                    with pa.ipc.open_stream(pa.py_buffer(rec.ipc)) as reader:
                        table = reader.read_all()
                except (pa.ArrowException, zlib.error) as exc:
                    if on_error is not None:
                        on_error(src, f"record lsn {rec.lsn} (host {rec.host}, seq {rec.seq}): {_one_line(exc)}")
                    continue
                for b in table.to_batches(max_chunksize=chunk_rows):
                    yield b, rec.host
    except (pa.ArrowException, OSError) as exc:
        raise ScanError(f"{src.path}: cannot read: {_one_line(exc)}") from None


def _split(batch: pa.RecordBatch, rows: int, host: str) -> Iterator[tuple[pa.RecordBatch, str]]:
    for off in range(0, batch.num_rows, rows):
        yield batch.slice(off, rows), host
