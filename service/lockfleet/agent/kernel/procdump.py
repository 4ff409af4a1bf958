"""Reading a kernel's learned lock graph: `/proc/lockdep`, `/proc/lockdep_chains`, `/proc/lockdep_stats`.

A kernel built with CONFIG_PROVE_LOCKING prints, in kernel/locking/lockdep_proc.c:

- `/proc/lockdep` (`l_show`): a first line `all lock classes:`, then per class in use

      <key>[ OPS:<n>] FD:<n> BD:<n> <usage>: <name>
       -> [<key>] <name>          (one line per direct dependency: locks_after, distance 1)
      <blank line>

  `<key>` is the class key as `%p` prints it (hashed since 4.15: no relation across machines);
  `OPS:` only with CONFIG_DEBUG_LOCKDEP; FD/BD/usage only with CONFIG_PROVE_LOCKING (older kernels
  printed them unconditionally); `<usage>` is get_usage_chars(): per irq state (hardirq, softirq,
  and reclaim_fs on kernels before 4.x) a write then a read character, `.` unused, `-` used in
  that irq, `+` used with that irq enabled, `?` both. `<name>` is print_name(): the class name,
  then `#V` when name_version > 1, then `/N` when the subclass N > 0; a class without a name
  prints its key's symbol. A name may hold spaces, parentheses, colons.
- `/proc/lockdep_chains` (`lc_show`): `all lock chains:` (after `(buggered) ` when the chain
  hlocks ran out), then per chain `irq_context: <0|hardirq|softirq|hardirq|softirq>` and one
  `[<key>] <name>` line per held class, outermost first, then a blank line.
- `/proc/lockdep_stats` (`lockdep_stats_show`): ` <what>: <n>[ [max: <n>]]` lines.

The parser never raises on text: what it cannot use it counts and says (`Dump.problems`; the
dependency lines that follow a line in no known shape, up to the next blank line, are left out as
well: they may belong to a damaged class line, not to the class above it), and a
dump cut in the middle (no final newline, or a class block without its closing blank line) gives
what it holds before the cut, with the cut said. Only a file with no class line at all is refused
(`DumpError`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ...errors import InputError

MAX_LINE = 8192          # lockdep names are KSYM_NAME_LEN (512) at most; longer is not the kernel's
BAD_LINES_SHOWN = 3      # line numbers quoted in the message about unreadable lines

_CLASS = re.compile(r"^(?P<key>[^\s\[\]]+)(?: OPS: *(?P<ops>\d+))?(?: FD: *(?P<fd>\d+) BD: *(?P<bd>\d+))?"
                    r"(?: (?P<usage>[-.+?]{2,8}))?: (?P<name>.*)$")
_STAT = re.compile(r"^\s*(?P<what>[A-Za-z][\w \-/]*?):\s+(?P<n>\d+)(?:\s+\[max:\s*(?P<max>\d+)\])?\s*$")
CLASSES_HEADER = "all lock classes:"
CHAINS_HEADER = "all lock chains:"


class DumpError(InputError):
    """A file that is not a /proc/lockdep dump (or cannot be read), said in one line."""


@dataclass(frozen=True)
class LockClass:
    """One class line of /proc/lockdep."""

    name: str                  # as print_name() printed it: `name`, `name#V`, `name/N`, `name#V/N`
    key: str
    usage: str = ""            # get_usage_chars(), "" when the kernel printed none
    line: int = 0


@dataclass
class Chain:
    """One chain of /proc/lockdep_chains: the held classes (printed names), outermost first."""

    irq_context: str
    names: tuple[str, ...]
    line: int = 0


def _empty_int() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass
class Dump:
    """One machine's /proc/lockdep, with its lockdep_chains and lockdep_stats when given.

    Columns, for dumps of hundreds of thousands of lines: the classes (`names` as printed,
    `usages`, `keys`, `class_lines`) and the dependencies (`dep_owner`: the index of the class
    whose block holds the line, `dep_taken`: the taken class as printed on the line, so that a
    dependency survives a dump cut before its target's class line, `dep_lines`)."""

    path: str
    host: str
    names: list[str] = field(default_factory=list)
    usages: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    class_lines: np.ndarray = field(default_factory=_empty_int)
    dep_owner: np.ndarray = field(default_factory=_empty_int)
    dep_taken: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    dep_lines: np.ndarray = field(default_factory=_empty_int)
    chains: list[Chain] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    chains_path: str = ""
    stats_path: str = ""
    problems: list[str] = field(default_factory=list)   # said on stderr; the rest is still used
    cut: bool = False
    sha256: str = ""
    mtime_ns: int = 0

    @property
    def classes(self) -> list[LockClass]:
        return [LockClass(n, k, u, int(ln)) for n, k, u, ln in zip(self.names, self.keys, self.usages,
                                                                      self.class_lines.tolist())]

    @property
    def deps(self) -> list[tuple[int, str, int]]:
        """(held class index, taken name as printed, line) per dependency line."""
        return list(zip(self.dep_owner.tolist(), self.dep_taken.to_pylist(), self.dep_lines.tolist()))


# ------------------------------------------------------------------------------ /proc/lockdep


def _lines(text: str) -> tuple[list[str], bool]:  # for lockdep_chains
    """The text's lines, and whether its last line was cut (no final newline)."""
    lines = text.split("\n")
    cut_line = bool(lines) and lines[-1] != ""
    if not cut_line:
        lines.pop()
    return lines, cut_line


def parse_lockdep(text: str, path: str = "", host: str = "") -> Dump:
    """Parse /proc/lockdep text (see the module's doc). Never raises; `problems` says what was
    not used and where the dump was cut. The lines are matched as Arrow columns (RE2, in C++)."""
    d = Dump(path=path, host=host)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    label = path or "/proc/lockdep"
    cut_line = bool(text) and not text.endswith("\n")
    if cut_line:
        text = text[:text.rfind("\n") + 1]
        d.cut = True
        d.problems.append(f"{label}:{text.count(chr(10)) + 1}: the dump ends in the middle of a line (cut); "
                          "that line is left out, everything before it is used")
    lines = text.split("\n")
    lines.pop()                                      # after the final newline
    n = len(lines)
    if not n:
        return d
    arr = pa.array(lines, pa.string())
    del lines
    too_long = np.asarray(pc.greater(pc.binary_length(arr), MAX_LINE))
    is_dep = np.asarray(pc.starts_with(arr, " -> ["))
    is_blank = np.asarray(pc.equal(arr, ""))
    is_header = np.asarray(pc.equal(arr, CLASSES_HEADER))
    cand = np.flatnonzero(~(is_dep | is_blank | is_header))
    m = pc.extract_regex(arr.take(cand), _CLASS.pattern)
    ok = np.asarray(m.is_valid()) & ~too_long[cand]
    if ok.any():
        ok &= np.asarray(pc.fill_null(pc.not_equal(m.field("name"), ""), False))
    good = pa.array(ok)
    cls_rows = cand[ok]
    bad = [cand[~ok]]
    if not len(cls_rows):
        return d
    mm = m.filter(good)
    d.names = mm.field("name").to_pylist()
    d.usages = mm.field("usage").to_pylist()
    d.keys = mm.field("key").to_pylist()
    d.class_lines = cls_rows + 1
    # each dependency line belongs to the class line above it, unless a blank line, the header or
    # a line in no known shape came between (every line but a dependency line is a marker)
    val = np.full(n, -1, np.int64)
    val[cls_rows] = np.arange(len(cls_rows))
    pos = np.where(is_dep, -1, np.arange(n))
    last = np.maximum.accumulate(pos)
    owner = np.where(last >= 0, val[np.maximum(last, 0)], -1)
    dep_rows = np.flatnonzero(is_dep)
    dm = pc.extract_regex(arr.take(dep_rows), r"^ -> \[[^\]]*\] (?P<name>.+)$")
    dok = np.asarray(dm.is_valid()) & (owner[dep_rows] >= 0) & ~too_long[dep_rows]
    bad.append(dep_rows[~dok])
    d.dep_owner = owner[dep_rows[dok]]
    d.dep_taken = dm.field("name").filter(pa.array(dok))
    d.dep_lines = dep_rows[dok] + 1
    if not is_header.any():
        d.problems.append(f"{label}: no 'all lock classes:' line: the start of the dump may be missing")
    if not cut_line and not is_blank[-1]:
        d.cut = True
        i = int(owner[-1]) if owner[-1] >= 0 else len(d.names) - 1
        d.problems.append(f"{label}:{n}: the dump ends inside the dependencies of {d.names[i]} "
                          f"(class line {int(d.class_lines[i])}) without its closing blank line: it was cut there")
    bad_rows = np.sort(np.concatenate(bad)) + 1
    if len(bad_rows):
        shown = ", ".join(map(str, bad_rows[:BAD_LINES_SHOWN].tolist())) + (", ..." if len(bad_rows) > BAD_LINES_SHOWN else "")
        d.problems.append(f"{label}: {len(bad_rows)} line(s) not in /proc/lockdep's format, left out (line {shown})")
    return d


# ------------------------------------------------------------------------------ lockdep_chains


def parse_chains(text: str, path: str = "") -> tuple[list[Chain], list[str]]:
    """/proc/lockdep_chains text -> (chains, problems). A chain cut by the end of the file is
    left out (its held classes are not known whole)."""
    chains: list[Chain] = []
    problems: list[str] = []
    label = path or "/proc/lockdep_chains"
    lines, cut_line = _lines(text)
    if cut_line:
        lines.pop()
    ctx: str | None = None
    names: list[str] = []
    start = 0
    bad = 0
    for no, s in enumerate(lines, 1):
        s = s.rstrip("\r")
        if s.startswith("irq_context: "):
            if ctx is not None and names:
                chains.append(Chain(ctx, tuple(names), start))
            ctx, names, start = s[len("irq_context: "):].strip(), [], no
        elif s.startswith("["):
            end = s.find("] ")
            if ctx is None or end < 0:
                bad += 1
            else:
                names.append(s[end + 2:])
        elif not s:
            if ctx is not None and names:
                chains.append(Chain(ctx, tuple(names), start))
            ctx, names = None, []
        elif not s.endswith(CHAINS_HEADER):
            bad += 1
    if ctx is not None and names:
        problems.append(f"{label}:{start}: the file ends inside a chain (cut); that chain is left out")
    elif cut_line:
        problems.append(f"{label}:{len(lines) + 1}: the file ends in the middle of a line (cut)")
    if bad:
        problems.append(f"{label}: {bad} line(s) not in /proc/lockdep_chains' format, left out")
    return chains, problems


# ------------------------------------------------------------------------------ lockdep_stats


def parse_stats(text: str) -> dict[str, int]:
    """/proc/lockdep_stats text -> {"lock-classes": n, "direct dependencies": n, "debug_locks": n, ...}."""
    out: dict[str, int] = {}
    for s in text.splitlines():
        m = _STAT.match(s)
        if m:
            out[m.group("what").strip()] = int(m.group("n"))
    return out


def _sniff(text: str) -> str:
    """Which /proc file a text is: "lockdep", "chains", "stats" or ""."""
    head = text[:4096]
    first = head.split("\n", 1)[0].strip()
    if first.endswith(CHAINS_HEADER):
        return "chains"
    if first == CLASSES_HEADER:
        return "lockdep"
    if "lock-classes:" in head and "direct dependencies:" in head:
        return "stats"
    if head.startswith("irq_context: "):
        return "chains"
    return "lockdep"


# ------------------------------------------------------------------------------ files


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DumpError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DumpError(f"{path}: is a directory without a 'lockdep' file") from None
    except OSError as exc:
        raise DumpError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _beside(path: Path, what: str) -> Path | None:
    """lockdep_chains / lockdep_stats beside a dump: `<file>_chains` (`lockdep` -> `lockdep_chains`,
    `web-1.lockdep` -> `web-1.lockdep_chains`), or `<stem>.lockdep_chains`."""
    for cand in (path.with_name(path.name + "_" + what), path.with_name(f"{path.stem}.lockdep_{what}")):
        if cand != path and cand.is_file():
            return cand
    return None


def host_of(path: Path) -> str:
    """A dump's host: a directory's name, else the file's stem (a file named `lockdep`: its
    directory's name)."""
    if path.is_dir() or path.name == "lockdep":
        return (path.resolve() if path.is_dir() else path.resolve().parent).name or "localhost"
    return path.stem or path.name


def read_dumps(paths: list[str], hosts: list[str] | None = None) -> list[Dump]:
    """Read every DUMP argument: a /proc/lockdep copy (its `_chains` and `_stats` files beside it
    are read when they exist), a directory holding `lockdep` (and `lockdep_chains`,
    `lockdep_stats`), or a lockdep_chains / lockdep_stats file given by itself, which goes with
    the dump of the same host. `hosts`, when given, names each dump's host in order."""
    files: list[tuple[Path, str, str, bytes]] = []     # (path, kind, host, data)
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "lockdep"
            host = host_of(path.parent)
        else:
            host = host_of(path)
        data = _read(path)
        files.append((path, _sniff(data[:4096].decode("utf-8", "replace")), host, data))
    mains = [f for f in files if f[1] == "lockdep"]
    if not mains:
        raise DumpError("no /proc/lockdep dump among the files (only lockdep_chains / lockdep_stats)")
    if hosts:
        if len(hosts) != len(mains):
            raise DumpError(f"--host given {len(hosts)} time(s) for {len(mains)} dump(s): give it once per dump, "
                            "in the same order")
    dumps: list[Dump] = []
    by_host: dict[str, Dump] = {}
    for i, (path, _kind, host, data) in enumerate(mains):
        d = parse_lockdep(data.decode("utf-8", "replace"), str(path), hosts[i] if hosts else host)
        if not d.names:
            raise DumpError(f"{path}: not a /proc/lockdep dump (no line '<key> FD: n BD: n <usage>: <name>')")
        d.sha256 = hashlib.sha256(data).hexdigest()
        try:
            d.mtime_ns = path.stat().st_mtime_ns
        except OSError:
            d.mtime_ns = 0
        for what in ("chains", "stats"):
            side = _beside(path, what)
            if side is not None:
                _attach(d, what, side, _read(side))
        dumps.append(d)
        by_host.setdefault(host, d)
    for path, kind, host, data in files:
        if kind in ("chains", "stats"):
            d0 = by_host.get(host) or (dumps[0] if len(dumps) == 1 else None)
            if d0 is None:
                raise DumpError(f"{path}: a lockdep_{kind} file with no /proc/lockdep dump of host {host!r} "
                                "among the files (name them <host>.lockdep and <host>.lockdep_{kind})")
            if (d0.chains_path if kind == "chains" else d0.stats_path) != str(path):
                _attach(d0, kind, path, data)
    for d in dumps:
        _check_stats(d)
    return dumps


def _attach(d: Dump, what: str, path: Path, data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    if what == "chains":
        chains, problems = parse_chains(text, str(path))
        d.chains, d.chains_path = chains, str(path)
        d.problems += problems
        d.sha256 = hashlib.sha256((d.sha256 + hashlib.sha256(data).hexdigest()).encode()).hexdigest()
    else:
        d.stats, d.stats_path = parse_stats(text), str(path)


def _check_stats(d: Dump) -> None:
    """What lockdep_stats says that the dump should hold, against what it holds."""
    s = d.stats
    n = s.get("lock-classes")
    if n is not None and n > len(d.names):
        d.problems.append(f"{d.path}: lockdep_stats counts {n} lock classes, the dump holds {len(d.names)}: "
                          "it is incomplete (cut, or classes were registered between the two reads)")
    if s.get("debug_locks") == 0:
        d.problems.append(f"{d.path}: lockdep_stats says debug_locks: 0: lockdep on {d.host} switched itself off "
                          "(after a report of its own, or a full table), so its graph stopped growing there")
