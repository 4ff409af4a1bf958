"""A small agent for kernel test machines: ship what lockdep learnt since the last look.

    python -m lockfleet.agent.kernel.procfs_agent --target HOST:PORT [--host NAME] [--every 60s] [--state FILE]

Every `--every` it reads `/proc/lockdep` (and `/proc/lockdep_chains` when it exists; `--proc DIR`
reads another directory, e.g. a copy), and sends to the service, as this host's events on one
Agent stream, only the dependencies and irq usage bits that the previous dump did not have (the
diff of two dumps; the first dump is sent whole), then waits for the service's ack. Dependencies
lockdep forgot (a class zapped with its module) are not withdrawn: the service keeps every
dependency it was ever told.

With `--state FILE` what was acknowledged is written there after each ack (atomically), so a
restarted agent goes on from it instead of sending the whole graph again; a crash between the ack
and that write sends those dependencies once more, which the service counts again but learns
nothing new from. The events are those of `lockfleet proc-lockdep --push` (proc_events.py).
TLS and tokens as `lockfleet push` takes them. SIGTERM/SIGINT: finish the round, then exit 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ...store.atomic import write_atomic
from .class_names import Normalizer, RulesError
from .procdump import Dump, parse_chains, parse_lockdep
from .procdump_events import USAGE_BITS, Graph, dump_graph, graph_events, mask_bits

log = logging.getLogger(__name__)
DEFAULT_TARGET = "127.0.0.1:50551"
DEPS_PER_BATCH = 16384
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(text: str) -> float:
    """`60s`, `5m`, `1h`, `500ms` or plain seconds -> seconds (> 0)."""
    m = _DURATION.match(text)
    if m is None or float(m.group(1)) * _UNIT[m.group(2)] <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 60s, 5m, 1h, 500ms)")
    return float(m.group(1)) * _UNIT[m.group(2)]


class Shipped:
    """What the service has acknowledged: dependencies and usage bits, by normalized class name."""

    def __init__(self) -> None:
        self.deps: set[tuple[str, str]] = set()
        self.usage: dict[str, set[str]] = {}

    def diff(self, g: Graph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dependencies (indices into g's) and usage (class ids, masks) not shipped yet."""
        names = g.table.names
        deps = np.array([i for i, (h, t) in enumerate(zip(g.h.tolist(), g.t.tolist()))
                         if (names[h], names[t]) not in self.deps], np.int64)
        u_ids, u_mask = [], []
        for i, m in zip(g.u_ids.tolist(), g.u_mask.tolist()):
            new = mask_bits(m) - self.usage.get(names[i], set())
            if new:
                u_ids.append(i)
                u_mask.append(sum(1 << USAGE_BITS.index(b) for b in new))
        return deps, np.array(u_ids, np.int64), np.array(u_mask, np.uint8)

    def add(self, g: Graph, deps: np.ndarray, u_ids: np.ndarray, u_mask: np.ndarray) -> None:
        names = g.table.names
        self.deps.update((names[g.h[i]], names[g.t[i]]) for i in deps.tolist())
        for i, m in zip(u_ids.tolist(), u_mask.tolist()):
            self.usage.setdefault(names[i], set()).update(mask_bits(m))

    def save(self, path: Path, host: str) -> None:
        doc = {"version": 1, "host": host, "deps": sorted(self.deps),
               "usage": {n: sorted(b) for n, b in sorted(self.usage.items())}}
        write_atomic(path, [json.dumps(doc, separators=(",", ":")).encode()])

    @classmethod
    def load(cls, path: Path, host: str) -> Shipped:
        s = cls()
        if not path.exists():
            return s
        try:
            doc = json.loads(path.read_text())
            if doc.get("host") != host:
                raise ValueError(f"it was written for host {doc.get('host')!r}, not {host!r}")
            s.deps = {(a, b) for a, b in doc["deps"]}
            s.usage = {n: set(b) for n, b in doc["usage"].items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--state {path}: cannot use it: {exc}") from None
        return s


def read_proc(proc: Path, host: str) -> Dump:
    """The current dump of `proc`/lockdep (and lockdep_chains beside it)."""
    path = proc / "lockdep"
    text = path.read_bytes().decode("utf-8", "replace")
    d = parse_lockdep(text, str(path), host)
    chains = proc / "lockdep_chains"
    if chains.exists():
        d.chains, problems = parse_chains(chains.read_bytes().decode("utf-8", "replace"), str(chains))
        d.chains_path = str(chains)
        d.problems += problems
    d.mtime_ns = time.time_ns()
    return d


class ProcAgent:
    """One round per `every` seconds: read, diff, send, wait for the ack, remember."""

    def __init__(self, agent: Any, proc: Path, host: str, norm: Normalizer, state: Path | None = None) -> None:
        self.agent = agent
        self.proc = proc
        self.host = host
        self.norm = norm
        self.state = state
        self.shipped = Shipped.load(state, host) if state else Shipped()
        self.rounds = 0

    def round(self, timeout: float | None = None) -> tuple[int, int]:
        """One look at /proc: returns (dependencies, usage bits) shipped and acknowledged."""
        d = read_proc(self.proc, self.host)
        for p in d.problems:
            log.warning("%s", p)
        if not d.names:
            log.warning("%s/lockdep holds no lock class (is this a CONFIG_PROVE_LOCKING kernel?)", self.proc)
        g = dump_graph(d, self.norm)
        deps, u_ids, u_mask = self.shipped.diff(g)
        self.rounds += 1
        if len(deps) or len(u_ids):
            none = np.zeros(0, np.int64)
            for i in range(0, len(u_ids), DEPS_PER_BATCH):
                self.agent.send_batch(graph_events(g, d.mtime_ns, deps=none,
                                                   usage=(u_ids[i:i + DEPS_PER_BATCH], u_mask[i:i + DEPS_PER_BATCH])))
            for i in range(0, len(deps), DEPS_PER_BATCH):
                self.agent.send_batch(graph_events(g, d.mtime_ns, deps=deps[i:i + DEPS_PER_BATCH],
                                                   usage=(none, none.astype(np.uint8))))
            if not self.agent.flush(timeout):
                err = self.agent.error
                raise RuntimeError(str(err) if err else "the service did not acknowledge in time")
            self.shipped.add(g, deps, u_ids, u_mask)
            if self.state is not None:
                self.shipped.save(self.state, self.host)
        bits = int(np.unpackbits(u_mask).sum()) if len(u_mask) else 0
        log.info("round %d: %d classes, %d dependencies in the dump; shipped %d new dependencies, %d new usage bits",
                 self.rounds, len(d.names), len(g), len(deps), bits)
        return len(deps), bits


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lockfleet.agent.kernel.procfs_agent",
        description="Ship this kernel's lockdep graph to a lockfleet service: every --every, read /proc/lockdep "
                    "(and /proc/lockdep_chains) and send, as this host's events, the dependencies and irq usage "
                    "bits that are new since the last dump (the first dump whole); each round waits for the "
                    "service's ack. Logs one line per round on stderr.",
        epilog="Exit status: 0 after SIGTERM/SIGINT or --once, 2 bad usage or unreadable /proc files, "
               "1 the service refused or stayed unreachable.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--target", default=DEFAULT_TARGET, metavar="HOST:PORT",
                   help=f"address of the lockfleet service (default: {DEFAULT_TARGET})")
    p.add_argument("--host", default=None, metavar="NAME", help="this machine's name (default: the hostname)")
    p.add_argument("--every", type=duration, default=60.0, metavar="DURATION",
                   help="time between dumps: 60s, 5m, 1h, 500ms or seconds (default: 60s)")
    p.add_argument("--proc", default="/proc", metavar="DIR",
                   help="where lockdep and lockdep_chains are read (default: /proc)")
    p.add_argument("--state", default=None, metavar="FILE",
                   help="remember what the service acknowledged here, to go on from it after a restart")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    p.add_argument("--retry-for", type=float, default=300.0, metavar="S",
                   help="keep retrying a lost connection for this long before failing (default: 300)")
    p.add_argument("--rules", default=None, metavar="FILE", help="more class name rules, as lockfleet proc-lockdep")
    p.add_argument("--no-normalize", action="store_true", help="keep class names as printed (`#N` stays)")
    g = p.add_argument_group("connection security (default: plain gRPC, no token)")
    g.add_argument("--token", default="", metavar="TOKEN", help="the ingest bearer token")
    g.add_argument("--token-file", default=None, metavar="FILE",
                   help="a file with the token alone, or with an 'ingest <token>' line (the server's format)")
    g.add_argument("--tls-ca", default=None, metavar="PEM", help="use TLS, trusting the server certificate this CA signed")
    g.add_argument("--tls-cert", default=None, metavar="PEM", help="this client's certificate (mTLS)")
    g.add_argument("--tls-key", default=None, metavar="PEM", help="this client's private key (mTLS)")
    g.add_argument("--tls-server-name", default="", metavar="NAME",
                   help="check the server certificate against NAME instead of the --target host")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from ...address import hostport_arg
    from ..client.channel import AgentError
    from ..client.sdk import Agent

    def fail(text: str, status: int) -> int:
        print(f"lockfleet procfs: {text}", file=sys.stderr)
        return status

    host = args.host or socket.gethostname()
    try:
        target = hostport_arg(args.target)
        norm = Normalizer.from_options(args.rules, defaults=not args.no_normalize)
        if not (Path(args.proc) / "lockdep").is_file():
            return fail(f"{args.proc}/lockdep: no such file (a kernel without CONFIG_LOCKDEP?)", EXIT_USAGE)
        agent = Agent(target, host, token=args.token, token_file=args.token_file, tls_ca=args.tls_ca,
                      tls_cert=args.tls_cert, tls_key=args.tls_key, server_name=args.tls_server_name,
                      retry_for=args.retry_for, on_refused="fail", quiet=True)
        pa_ = ProcAgent(agent, Path(args.proc), host, norm, Path(args.state) if args.state else None)
    except (argparse.ArgumentTypeError, RulesError, ValueError, AgentError) as exc:
        return fail(str(exc), EXIT_USAGE)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    status = EXIT_OK
    try:
        while True:
            started = time.monotonic()
            pa_.round()
            if args.once or stop.wait(max(0.0, args.every - (time.monotonic() - started))):
                break
    except OSError as exc:
        status = fail(f"{args.proc}: cannot read: {exc.strerror or exc}", EXIT_USAGE)
    except (AgentError, RuntimeError) as exc:
        status = fail(" ".join(str(exc).split()), EXIT_FAILURE)
    finally:
        try:
            agent.close(timeout=10)
        except AgentError as exc:
            if status == EXIT_OK:
                status = fail(" ".join(str(exc).split()), EXIT_FAILURE)
    return status


if __name__ == "__main__":
    sys.exit(main())
