"""The aggregates people ask of an archive, as polars expressions over a lazy scan.

Events are read as one lazy frame (`events_frame`: ts_ns, tid, op, lock, subclass, mode, host, in
apply order), with the selection pushed down into the Parquet scans, and each query runs on polars'
streaming engine over it (one at a time: sharing one scan between queries would cache all of it).
Hold times need each thread's rows in order together: they are computed in parts cut by a hash of
the thread id (so no hold spans two parts: every thread's rows are in one part, and no pairing is
lost), and each part is reduced at once to partial aggregates per lock class (count, sum, min, max,
and a log-scale histogram), which are merged across parts (`HoldSketch`). Memory follows the part
(about 5M events) and the number of lock classes, not the archive.

- `classes`: events per lock class (`name` or `name/subclass`): events, acquires (trylocks too),
  releases (a release names no subclass: it counts on `name`), hosts;
- `hosts`: per host: events, acquires, releases, threads, lock classes, first and last ts_ns, and
  the findings it takes part in (from the engine);
- `hold_times`: per class, from acquisitions paired with releases: count, p50, p99, max and mean
  hold in ns. count, max and mean are exact; p50 and p99 come from a log-scale histogram (16
  buckets per power of two, each ~4.4% wide): the bucket that holds the nearest-rank value is found
  exactly, and its geometric midpoint is reported, so p50/p99 are within 2^(1/32) - 1 ~ 2.2% of the
  exact nearest-rank values (plus up to 0.5 ns from rounding to whole ns; holds of 0 ns or less
  report 0). Pairing is per (host, thread, lock name), last in first out, as the
  engine matches a release without instances; a release with nothing to pair is left out, and so
  is an acquisition still held at the end; `taken_while_held`: the acquisitions the holder made
  while it held the class (at any depth);
- `edges`: every dependency held -> taken from the engine (the same core as the service, so the
  same dependencies): kinds, times taken, hosts that took it, first host, first and last seen
  (last to the second, as the core keeps it);
- `held_while_taking`: the locks most often held while others are taken: per held class, the
  acquisitions its holder made while holding it, at any depth (from the paired holds), and the
  times it was directly below an acquisition, the classes taken directly under it and on how many
  hosts (from the edges);
- `timeline`: events per time bucket and host (for the report's plot);
- `hold_histogram`: holds per class in power-of-two buckets of ns (bucket b: 2^b <= ns < 2^(b+1),
  bucket 0 also holds 0 ns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa

from ..engine import Engine
from ..events import RELEASE
from ..findings.model import Link
from .scan import Plan, Selection, Source, read_log_segment

LOCK = pl.Categorical
TIMELINE_BUCKETS = 120
PARTITION_ROWS = 5_000_000


# ---------------------------------------------------------------------------------------------- the frame

def _int(value: Any) -> int:
    """A polars scalar (min, max of an integer column) as an int."""
    return int(value)


def _normal(lf: pl.LazyFrame, columns: tuple[str, ...] | list[str], host: str | None) -> pl.LazyFrame:
    """The columns the aggregates use, with defaults for the optional ones, in one schema."""
    def opt(name: str, dtype: pl.DataType | type[pl.DataType]) -> pl.Expr:
        return pl.col(name).fill_null(0).cast(dtype) if name in columns else pl.lit(0, dtype).alias(name)

    if "host" in columns:
        h = pl.col("host").cast(pl.String)
        host_expr = (h if host is None else h.fill_null(pl.lit(host))).cast(LOCK).alias("host")
    else:
        host_expr = pl.lit(host or "").cast(LOCK).alias("host")
    return lf.select(
        pl.col("ts_ns").cast(pl.Int64), pl.col("tid").cast(pl.Int64), pl.col("op").cast(pl.UInt8),
        pl.col("lock").cast(pl.String).cast(LOCK), opt("subclass", pl.UInt8), opt("mode", pl.UInt8), host_expr)


def _log_frame(src: Source) -> pl.LazyFrame | None:
    """A log segment's records as one frame (log segments are the part not yet compacted: small)."""
    frames = []
    for rec in read_log_segment(src.path):
        try:
            with pa.ipc.open_stream(pa.py_buffer(rec.ipc)) as reader:
                table = reader.read_all()
        except pa.ArrowException:
            continue  # skipped by the engine too (scan.chunks reports it)
        if table.num_rows:
            df = pl.from_arrow(table)
            assert isinstance(df, pl.DataFrame)   # a Table gives a frame
            frames.append(_normal(df.lazy(), table.schema.names, rec.host))
    return pl.concat(frames, how="vertical") if frames else None


def events_frame(plan: Plan, selection: Selection = Selection()) -> pl.LazyFrame:
    """Every selected event of the plan, in apply order: ts_ns, tid, op, lock, subclass, mode, host."""
    frames: list[pl.LazyFrame] = []
    run: list[Source] = []

    def flush() -> None:
        if run:
            lf = pl.scan_parquet([str(s.path) for s in run], hive_partitioning=False, missing_columns="insert",
                                 extra_columns="ignore")
            frames.append(_normal(lf, run[0].columns, run[0].host if not run[0].archive else None))
            run.clear()

    for src in plan.sources:
        if src.kind == "parquet":
            # one scan for consecutive files of the same columns and default host
            if run and (run[-1].columns != src.columns or run[-1].host != src.host or run[-1].archive != src.archive):
                flush()
            run.append(src)
            continue
        flush()
        if src.kind == "parquet_merged":
            lf = pl.scan_parquet([str(x) for x in src.paths], hive_partitioning=False).sort(["lsn", "row"])
            frames.append(_normal(lf, src.columns, None))
        elif src.kind == "ipc_file":
            frames.append(_normal(pl.scan_ipc(src.path), src.columns, src.host))
        elif src.kind == "ipc_stream":
            frames.append(_normal(pl.read_ipc_stream(src.path).lazy(), src.columns, src.host))
        else:
            log_lf = _log_frame(src)
            if log_lf is not None:
                frames.append(log_lf)
    flush()
    if not frames:
        lf = pl.LazyFrame(schema={"ts_ns": pl.Int64, "tid": pl.Int64, "op": pl.UInt8, "lock": LOCK,
                                  "subclass": pl.UInt8, "mode": pl.UInt8, "host": LOCK})
    else:
        lf = pl.concat(frames, how="vertical", rechunk=False)
    if selection.since is not None:
        lf = lf.filter(pl.col("ts_ns") >= selection.since)
    if selection.until is not None:
        lf = lf.filter(pl.col("ts_ns") < selection.until)
    if selection.hosts is not None:
        lf = lf.filter(pl.col("host").cast(pl.String).is_in(sorted(selection.hosts)))
    return lf


def class_name() -> pl.Expr:
    """lockdep's `__print_lock_name`: `name`, or `name/subclass` for subclass > 0."""
    name = pl.col("lock").cast(pl.String)
    return (pl.when(pl.col("subclass") > 0)
            .then(pl.concat_str([name, pl.lit("/"), pl.col("subclass").cast(pl.String)]))
            .otherwise(name).alias("class"))


# ---------------------------------------------------------------------------------------------- queries

def class_host_query(ev: pl.LazyFrame) -> pl.LazyFrame:
    """Per (host, class): events, acquires, releases, first and last ts_ns; the classes and hosts
    tables roll it up (hosts x classes rows, far fewer than events)."""
    sub = pl.when(pl.col("op") == RELEASE).then(pl.lit(0, pl.UInt8)).otherwise(pl.col("subclass")).alias("subclass")
    return (ev.with_columns(sub).group_by("host", "lock", "subclass")
            .agg(pl.len().alias("events"),
                 (pl.col("op") != RELEASE).sum().alias("acquires"),
                 (pl.col("op") == RELEASE).sum().alias("releases"),
                 pl.col("ts_ns").min().alias("first_ts_ns"),
                 pl.col("ts_ns").max().alias("last_ts_ns")))


def host_threads_query(ev: pl.LazyFrame) -> pl.LazyFrame:
    return ev.group_by("host").agg(pl.col("tid").n_unique().alias("threads"))


def classes_table(per_host: pl.LazyFrame) -> pl.LazyFrame:
    return (per_host.group_by("lock", "subclass")
            .agg(pl.col("events").sum(), pl.col("acquires").sum(), pl.col("releases").sum(),
                 pl.len().alias("hosts"))
            .select(class_name(), "events", "acquires", "releases", "hosts")
            .sort(["events", "class"], descending=[True, False]))


def hosts_table(per_host: pl.LazyFrame, threads: pl.LazyFrame) -> pl.LazyFrame:
    cls = (pl.col("lock").to_physical().cast(pl.UInt64) * 256 + pl.col("subclass").cast(pl.UInt64))
    return (per_host.group_by("host")
            .agg(pl.col("events").sum(), pl.col("acquires").sum(), pl.col("releases").sum(),
                 cls.filter(pl.col("acquires") > 0).n_unique().alias("classes"),
                 pl.col("first_ts_ns").min(), pl.col("last_ts_ns").max())
            .join(threads, on="host", how="left")
            .select("host", "events", "acquires", "releases", "threads", "classes", "first_ts_ns", "last_ts_ns")
            .with_columns(pl.col("host").cast(pl.String))
            .sort(["events", "host"], descending=[True, False]))


def holds_query(ev: pl.LazyFrame) -> pl.LazyFrame:
    """One row per paired hold: lock, subclass (of the acquisition), hold_ns, and `inside`: the
    acquisitions the same thread made while it held it (at any depth).

    Per (host, tid, lock name), P is the running sum of +1 (acquire, trylock) and -1 (release). An
    acquisition pushes to level P (after it), a release pops from level P + 1 (before it). Pushes
    to and pops from one level alternate (a walk crosses each step up and down in turn), so the
    release that matches an acquisition last-in first-out is the next row at its level: the first
    time the walk comes back below it. A release of a lock not held (the walk at a new low) is
    never the next row at an acquisition's level, so it pairs with nothing. `inside` is the
    difference of the thread's running count of acquisitions between the two rows."""
    g = ["host", "tid", "lock"]
    is_rel = pl.col("op") == RELEASE
    walk = pl.when(is_rel).then(-1).otherwise(1).cast(pl.Int32).cum_sum()
    nxt = [*g, "level"]
    return (ev.select("host", "tid", "lock", "subclass", "op", "ts_ns")
            .with_columns(walk.over(g).alias("p"),
                          (~is_rel).cast(pl.Int64).cum_sum().over(["host", "tid"]).alias("na"))
            .with_columns(pl.when(is_rel).then(pl.col("p") + 1).otherwise(pl.col("p")).alias("level"))
            .with_columns(pl.col("ts_ns").shift(-1).over(nxt).alias("t1"),
                          pl.col("op").shift(-1).over(nxt).alias("op1"),
                          pl.col("na").shift(-1).over(nxt).alias("na1"))
            .filter(~is_rel & (pl.col("op1") == RELEASE))
            .select("lock", "subclass", (pl.col("t1") - pl.col("ts_ns")).alias("hold_ns"),
                    (pl.col("na1") - pl.col("na")).alias("inside")))


HIST_PER_OCTAVE = 16
# the largest relative error of a reported p50/p99 (before rounding to whole ns): a bucket spans
# [2^(b/16), 2^((b+1)/16)), and its geometric midpoint is within 2^(1/32) of either end
QUANTILE_REL_ERROR = 2 ** (1 / (2 * HIST_PER_OCTAVE)) - 1
_CLASS_KEY = ["lock", "subclass"]


def fine_bucket() -> pl.Expr:
    """The hold's log-scale bucket: floor(log2(hold_ns) * 16) (bucket b: 2^(b/16) <= ns <
    2^((b+1)/16), ~4.4% wide), or -1 for holds of 0 ns or less (a clock step)."""
    ns = pl.col("hold_ns")
    return (pl.when(ns <= 0).then(pl.lit(-1.0))
            .otherwise((ns.cast(pl.Float64).log(2) * HIST_PER_OCTAVE).floor())).cast(pl.Int32).alias("fb")


class HoldSketch:
    """Mergeable hold-time statistics per lock class (lock, subclass): `stats` (count, sum, min and
    max of hold_ns, and the acquisitions made inside the holds) and `hist` (holds per log-scale
    bucket `fb`, see `fine_bucket`). Each part's holds are reduced to these and summed into them,
    so what is kept has a row per class and a row per (class, bucket) in use (at most 16 per power
    of two of ns), whatever the number of holds or parts.

    p50/p99 (`hold_times`): the nearest-rank value's bucket, found exactly from the cumulative
    bucket counts, reported as the bucket's geometric midpoint (clamped to the class's exact min and
    max): within QUANTILE_REL_ERROR (2^(1/32) - 1 ~ 2.2%) of the exact nearest-rank value, plus up to
    0.5 ns from rounding to whole ns. count, max, mean and taken_while_held are exact."""

    STATS: ClassVar[Any] = {"lock": LOCK, "subclass": pl.UInt8, "count": pl.Int64, "sum_ns": pl.Int64,
                                       "min_ns": pl.Int64, "max_ns": pl.Int64, "inside": pl.Int64}
    HIST: ClassVar[Any] = {"lock": LOCK, "subclass": pl.UInt8, "fb": pl.Int32, "count": pl.Int64}

    def __init__(self) -> None:
        self.stats = pl.DataFrame(schema=self.STATS)
        self.hist = pl.DataFrame(schema=self.HIST)

    @staticmethod
    def partials(holds: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """One part's holds (lock, subclass, hold_ns, inside) as (stats, hist) partials."""
        stats = (holds.group_by(_CLASS_KEY)
                 .agg(pl.len().cast(pl.Int64).alias("count"), pl.col("hold_ns").sum().cast(pl.Int64).alias("sum_ns"),
                      pl.col("hold_ns").min().cast(pl.Int64).alias("min_ns"),
                      pl.col("hold_ns").max().cast(pl.Int64).alias("max_ns"),
                      pl.col("inside").sum().cast(pl.Int64).alias("inside")))
        hist = (holds.with_columns(fine_bucket()).group_by([*_CLASS_KEY, "fb"])
                .agg(pl.len().cast(pl.Int64).alias("count")))
        s, h = pl.collect_all([stats, hist])
        return s.select(list(HoldSketch.STATS)), h.select(list(HoldSketch.HIST))

    def add(self, holds: pl.DataFrame | pl.LazyFrame) -> None:
        """Reduce a part's holds and merge them in."""
        self.merge(*self.partials(holds.lazy()))

    def merge(self, stats: pl.DataFrame, hist: pl.DataFrame) -> None:
        self.stats = (pl.concat([self.stats, stats.cast(self.STATS)]).group_by(_CLASS_KEY, maintain_order=True)
                      .agg(pl.col("count").sum(), pl.col("sum_ns").sum(), pl.col("min_ns").min(),
                           pl.col("max_ns").max(), pl.col("inside").sum()))
        self.hist = (pl.concat([self.hist, hist.cast(self.HIST)]).group_by([*_CLASS_KEY, "fb"], maintain_order=True)
                     .agg(pl.col("count").sum()))

    def _quantile(self, q: float, name: str) -> pl.LazyFrame:
        # the nearest rank, as polars' quantile(q, "nearest"): round((n - 1) * q), half away from 0
        rank = ((pl.col("n") - 1).cast(pl.Float64) * q + 0.5).floor()
        fb = pl.col("fb")
        mid = pl.when(fb < 0).then(pl.lit(0.0)).otherwise(
            pl.lit(2.0).pow((fb.cast(pl.Float64) + 0.5) / HIST_PER_OCTAVE))
        return (self.hist.lazy().sort([*_CLASS_KEY, "fb"])
                .with_columns(pl.col("count").cum_sum().over(_CLASS_KEY).alias("cum"),
                              pl.col("count").sum().over(_CLASS_KEY).alias("n"))
                .filter(pl.col("cum") > rank)
                .group_by(_CLASS_KEY).agg(fb.first())
                .select(*_CLASS_KEY, mid.alias(name)))

    def hold_times(self) -> pl.DataFrame:
        """count, p50_ns, p99_ns (see the class), max_ns, mean_ns, taken_while_held per class."""
        def clamp(c: str) -> pl.Expr:
            return pl.col(c).clip(pl.col("min_ns").cast(pl.Float64), pl.col("max_ns").cast(pl.Float64)).round(0) \
                .cast(pl.Int64).alias(c)
        return (self.stats.lazy()
                .join(self._quantile(0.5, "p50_ns"), on=_CLASS_KEY, how="left", nulls_equal=True)
                .join(self._quantile(0.99, "p99_ns"), on=_CLASS_KEY, how="left", nulls_equal=True)
                .with_columns(clamp("p50_ns"), clamp("p99_ns"),
                              (pl.col("sum_ns").cast(pl.Float64) / pl.col("count")).alias("mean_ns"),
                              pl.col("inside").alias("taken_while_held"))
                .select(class_name(), "count", "p50_ns", "p99_ns", "max_ns", "mean_ns", "taken_while_held")
                .sort(["count", "class"], descending=[True, False]).collect())

    def hold_histogram(self) -> pl.DataFrame:
        """Holds per class in power-of-two buckets of ns (bucket b: 2^b <= ns < 2^(b+1), bucket 0
        also holds 1 ns and less): the fine buckets summed (floor(fb / 16) = floor(log2(ns)))."""
        bucket = (pl.max_horizontal(pl.col("fb"), pl.lit(0, pl.Int32)) // HIST_PER_OCTAVE).cast(pl.Int32)
        return (self.hist.lazy().group_by(*_CLASS_KEY, bucket.alias("bucket")).agg(pl.col("count").sum())
                .select(class_name(), "bucket", "count").sort(["class", "bucket"]).collect())


def timeline_query(ev: pl.LazyFrame, t0: int, width: int) -> pl.LazyFrame:
    return (ev.group_by(((pl.col("ts_ns") - t0) // width).alias("bucket"), "host")
            .agg(pl.len().alias("events"))
            .with_columns(pl.col("host").cast(pl.String), (pl.col("bucket") * width + t0).alias("ts_ns"))
            .sort(["bucket", "host"]))


def edges_frame(engine: Engine) -> pl.DataFrame:
    """Every dependency the engine holds, with its counters, most taken first."""
    rows: dict[str, list[Any]] = {k: [] for k in ("held", "taken", "kinds", "count", "hosts", "first_host", "first_ts_ns",
                            "last_ts_ns", "host_list")}
    for link in _links(engine):
        rows["held"].append(link.held)
        rows["taken"].append(link.taken)
        rows["kinds"].append(",".join(link.kinds))
        rows["count"].append(link.count)
        rows["hosts"].append(len(link.hosts))
        rows["first_host"].append(link.first_taken.host)
        rows["first_ts_ns"].append(link.first_taken.ts_ns)
        rows["last_ts_ns"].append(max(link.last_ts_ns, link.first_taken.ts_ns))
        rows["host_list"].append(list(link.hosts))
    df = pl.DataFrame(rows, schema={"held": pl.String, "taken": pl.String, "kinds": pl.String, "count": pl.Int64,
                                    "hosts": pl.Int64, "first_host": pl.String, "first_ts_ns": pl.Int64,
                                    "last_ts_ns": pl.Int64, "host_list": pl.List(pl.String)})
    return df.sort(["count", "hosts", "held", "taken"], descending=[True, True, False, False])


def _links(engine: Engine) -> list[Link]:
    """Each dependency with its evidence."""
    return engine.links()


def held_while_taking(edges: pl.DataFrame, hold_times: pl.DataFrame) -> pl.DataFrame:
    """Per held class: acquisitions its holder made while holding it (any depth, from the paired
    holds), times it was directly below an acquisition (its dependencies' counts), how many classes
    were taken directly under it, on how many hosts."""
    direct = (edges.lazy().group_by("held")
              .agg(pl.col("count").sum().alias("direct"), pl.len().alias("taken_classes"),
                   pl.col("host_list").explode().n_unique().cast(pl.Int64).alias("hosts")))
    inside = hold_times.lazy().select(pl.col("class").alias("held"), "taken_while_held")
    return (inside.join(direct, on="held", how="full", coalesce=True)
            .with_columns(pl.col("taken_while_held", "direct", "taken_classes", "hosts").fill_null(0))
            .filter((pl.col("taken_while_held") > 0) | (pl.col("direct") > 0))
            .select("held", "taken_while_held", "direct", "taken_classes", "hosts")
            .sort(["taken_while_held", "direct", "held"], descending=[True, True, False]).collect())


@dataclass
class Aggregates:
    classes: pl.DataFrame
    hosts: pl.DataFrame
    hold_times: pl.DataFrame
    edges: pl.DataFrame
    held_while_taking: pl.DataFrame
    timeline: pl.DataFrame
    hold_histogram: pl.DataFrame
    timeline_width_ns: int = 0
    extra: dict = field(default_factory=dict)

    TABLES = ("classes", "hosts", "hold_times", "edges", "held_while_taking")

    def to_dict(self, top: int = 0) -> dict:
        out = {}
        for name in self.TABLES:
            df: pl.DataFrame = getattr(self, name)
            if name == "edges":
                df = df.drop("host_list")
            out[name] = {"rows": df.height, "top": (df.head(top) if top else df).to_dicts()}
        return out


def compute(plan: Plan, selection: Selection, engine: Engine,
            alerts_by_host: dict[str, int] | None = None,
            status: Callable[[str], None] | None = None, partition_rows: int = PARTITION_ROWS) -> Aggregates:
    """Every aggregate of the plan's events: one streaming pass for the counts, one for the
    timeline, then the hold times in parts of about `partition_rows` events, cut by a hash of the
    thread id (pairing needs a thread's rows together; threads are independent, so no hold spans
    two parts). Each part's holds are reduced at once to partial aggregates per lock class, merged
    into a `HoldSketch`: memory follows the part and the number of classes, not the archive."""
    ev = events_frame(plan, selection)
    if status:
        status("aggregating: classes, hosts")
    # one query at a time: collect_all would share the scan through a cache that holds all of it
    per_host = class_host_query(ev).collect(engine="streaming")
    threads = host_threads_query(ev).collect(engine="streaming")
    classes, hosts = pl.collect_all([classes_table(per_host.lazy()), hosts_table(per_host.lazy(), threads.lazy())])
    alerts_by_host = alerts_by_host or {}
    hosts = hosts.with_columns(
        pl.col("host").replace_strict(alerts_by_host, default=0, return_dtype=pl.Int64).alias("findings"))
    t0 = _int(hosts["first_ts_ns"].min()) if hosts.height else 0
    t1 = _int(hosts["last_ts_ns"].max()) if hosts.height else 0
    width = _nice_width(max(1, (t1 - t0 + 1) // TIMELINE_BUCKETS + 1))
    t0 -= t0 % width
    if status:
        status("aggregating: timeline")
    timeline = timeline_query(ev, t0, width).collect(engine="streaming")
    total = int(hosts["events"].sum()) if hosts.height else 0
    n_parts = max(1, -(-total // max(1, partition_rows)))
    sketch = HoldSketch()
    for i in range(n_parts):
        if status:
            status(f"aggregating: hold times, part {i + 1} of {n_parts}")
        # by thread id alone: a thread's rows stay together whatever its host, and the filter
        # needs only the tid column, which the Parquet reader filters before decoding the others
        part = ev if n_parts == 1 else ev.filter(pl.col("tid").hash(seed=7) % n_parts == i)
        holds = holds_query(part).collect(engine="streaming")
        sketch.add(holds)
        del holds
    hold_times, hist = sketch.hold_times(), sketch.hold_histogram()
    edges = edges_frame(engine)
    return Aggregates(classes=classes, hosts=hosts, hold_times=hold_times, edges=edges,
                      held_while_taking=held_while_taking(edges, hold_times), timeline=timeline, hold_histogram=hist,
                      timeline_width_ns=width)


_NICE = [1, 2, 5]


def _nice_width(w: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten (ns), or a round unit of time, >= w."""
    units = [10**9, 60 * 10**9, 300 * 10**9, 600 * 10**9, 1800 * 10**9, 3600 * 10**9, 6 * 3600 * 10**9,
             86_400 * 10**9, 7 * 86_400 * 10**9]
    if w >= 10**9:
        for u in units:
            if u >= w:
                return u
        return -(-w // units[-1]) * units[-1]
    p = 1
    while True:
        for m in _NICE:
            if m * p >= w:
                return m * p
        p *= 10

