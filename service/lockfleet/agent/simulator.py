"""`lockfleet simulate`: a fleet of N agent processes streaming a realistic, seeded lock workload to
a lockfleet service, for demos and load tests.

The lock graph (the same for every host, from `--seed`):

- `--classes` lock classes with kernel-like names (`&rq->lock`, `&sb->s_umount`, ...) in `--layers`
  layers. A background session takes one class from each of a few increasing layers, then releases
  them (mostly in reverse order, sometimes out of order; some acquisitions are trylocks, some
  rwsem ones are reads), so the background graph is acyclic, as a healthy kernel's is.
- Reuse is skewed: within a layer a host picks classes by a Zipf law (`--zipf`) over its own
  ranking of the layer, so every host has its hot locks, and the fleet shares most classes.
- `--threads` threads per host run sessions at once, their events interleaved.
- `--cycles` planted cycles, each of its own classes (taken with nothing else held), with its
  dependencies split across hosts: for a 3-cycle X -> Y -> Z -> X, one host takes X then Y, another
  Y then Z, a third Z then X, each a few times during the run. No host sees a whole cycle; the
  service finds each as one circular alert (with a single host, the cycle is that host's own).

Each host is a separate process (`python -m lockfleet.agent.simulator --worker`, configured as JSON
on stdin) running an `Agent` with overflow "block", sending `--rate` events per second for
`--duration` seconds, then closing the Agent (every event acked). The command prints the plan,
each host's counts, the totals, and with `--check` which planted cycles came back as alerts.
Memory: each agent process is a Python with pyarrow and grpc loaded, some 60-100 MB.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

_OBJECTS = ("rq", "sb", "inode", "dev", "sk", "mm", "q", "ctx", "tty", "zone", "bdev", "pmu", "map", "prog",
            "cgrp", "net", "file", "page", "wq", "desc", "hctx", "dentry", "css", "event", "kn")
_FIELDS = ("lock", "mutex", "sem", "rwsem", "list_lock", "state_lock", "wait_lock", "i_rwsem", "s_umount",
           "event_mutex", "io_lock", "tree_lock")
_VERBS = ("alloc", "free", "attach", "detach", "update", "flush", "lookup", "insert", "remove", "sync",
          "open", "release", "enable", "disable", "resize", "poll")
_COMMS = ("kworker/u16:3", "systemd", "nginx", "postgres", "java", "containerd", "kswapd0", "jbd2/sda1-8",
          "sshd", "python3", "envoy", "irq/42-nvme0q1", "bpf_test", "perf", "rcu_preempt")
PLANTED_TID = 1
BASE_TID = 100


@dataclass(frozen=True)
class SimConfig:
    hosts: int = 4
    rate: float = 2000.0          # events per second, per host
    duration: float = 10.0        # seconds
    seed: int = 0
    classes: int = 120
    layers: int = 6
    threads: int = 8              # simulated threads per host
    depth: int = 4                # most locks a background session holds at once
    zipf: float = 1.2
    cycles: int = 3
    host_prefix: str = "sim"
    batch_rows: int = 4096
    batch_interval: float = 0.2
    planted_repeats: int = 3      # times each planted dependency is taken
    retry_for: float = 30.0       # an agent gives up after the service is away this long

    def check(self) -> None:
        if self.hosts < 1 or self.rate <= 0 or self.duration <= 0 or self.threads < 1 or self.depth < 1:
            raise ValueError("--hosts, --threads and --depth must be >= 1, --rate and --duration > 0")
        if self.layers < 1 or self.classes < self.layers:
            raise ValueError("--classes must be at least --layers, and --layers >= 1")
        if self.cycles < 0 or self.planted_repeats < 1 or self.zipf < 0 or self.retry_for < 0 or self.batch_rows < 1:
            raise ValueError("--cycles, --zipf and --retry-for must be >= 0, --batch-rows >= 1")


@dataclass(frozen=True)
class Planted:
    """A planted cycle: locks[i] is held while locks[i+1] is taken (wrapping), on hosts[i]."""

    locks: tuple[str, ...]
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    hosts: tuple[str, ...]
    layers: tuple[tuple[str, ...], ...]
    planted: tuple[Planted, ...]

    def edges_of(self, host: str) -> list[tuple[str, str]]:
        return [(p.locks[i], p.locks[(i + 1) % len(p.locks)]) for p in self.planted
                for i, h in enumerate(p.hosts) if h == host]


def lock_names(n: int, rng: random.Random) -> list[str]:
    """n distinct kernel-like class names, in a seeded order."""
    combos = [f"&{o}->{f}" for o in _OBJECTS for f in _FIELDS]
    rng.shuffle(combos)
    names = combos[:n]
    k = 2
    while len(names) < n:
        names += [f"{c}#{k}" for c in combos[:n - len(names)]]
        k += 1
    return names


def make_plan(cfg: SimConfig) -> Plan:
    rng = random.Random(cfg.seed)
    hosts = tuple(f"{cfg.host_prefix}-{i}" for i in range(cfg.hosts))
    length = min(3, cfg.hosts) if cfg.hosts >= 2 else 2
    names = lock_names(cfg.classes + cfg.cycles * length, rng)
    background, special = names[:cfg.classes], names[cfg.classes:]
    per = [cfg.classes // cfg.layers + (1 if i < cfg.classes % cfg.layers else 0) for i in range(cfg.layers)]
    layers, at = [], 0
    for size in per:
        layers.append(tuple(background[at:at + size]))
        at += size
    planted = []
    for c in range(cfg.cycles):
        locks = tuple(special[c * length:(c + 1) * length])
        on = tuple(hosts[(c + i) % cfg.hosts] for i in range(length))
        planted.append(Planted(locks, on))
    return Plan(hosts, tuple(layers), tuple(planted))


# -- one host ------------------------------------------------------------------------------

class HostWorkload:
    """The events of one simulated host: interleaved sessions of its threads, plus its share of
    the planted dependencies at seeded moments. Deterministic for a seed, except timestamps."""

    def __init__(self, cfg: SimConfig, plan: Plan, index: int) -> None:
        self.cfg = cfg
        self.host = plan.hosts[index]
        self.rng = random.Random(cfg.seed * 1_000_003 + index + 1)
        rng = self.rng
        self.layers = plan.layers
        self.cum: list[list[float]] = []
        self.ranked: list[list[str]] = []
        for layer in plan.layers:
            order = list(layer)
            rng.shuffle(order)                      # this host's own hot locks
            total, cum = 0.0, []
            for r in range(len(order)):
                total += 1.0 / (r + 1) ** cfg.zipf
                cum.append(total)
            self.ranked.append(order)
            self.cum.append(cum)
        n = len(plan.layers)
        self.layer_cum = []
        total = 0.0
        for i in range(n):
            total += 1.0 / (i + 1)                  # sessions start more often at the outer layers
            self.layer_cum.append(total)
        self.sites: dict[str, list[str]] = {}
        for layer in plan.layers:
            for name in layer:
                obj = name[1:].split("->")[0].rstrip("0123456789#")
                self.sites[name] = [f"{obj}_{rng.choice(_VERBS)}+0x{rng.randrange(16, 4096):x}"
                                    f"/0x{rng.randrange(4096, 8192):x}" for _ in range(3)]
        self.tids = [BASE_TID + k for k in range(cfg.threads)]
        self.tasks = {t: f"{rng.choice(_COMMS)}/{t}" for t in self.tids}
        self.pending: dict[int, deque[tuple[int, str, int, str | None]]] = {t: deque() for t in self.tids}
        self.planted = plan.edges_of(self.host)
        self.planted_task = f"{_COMMS[index % len(_COMMS)]}/{PLANTED_TID}"
        times = []
        for e, _edge in enumerate(self.planted):
            for k in range(cfg.planted_repeats):
                lo = cfg.duration * (0.1 + 0.8 * k / cfg.planted_repeats)
                hi = cfg.duration * (0.1 + 0.8 * (k + 1) / cfg.planted_repeats)
                times.append((rng.uniform(lo, hi), e))
        self.planted_due = deque(sorted(times))
        self.planted_taken = [0] * len(self.planted)

    def _session(self, tid: int) -> None:
        cfg, rng = self.cfg, self.rng
        n = len(self.layers)
        start = rng.choices(range(n), cum_weights=self.layer_cum)[0]
        depth = min(n - start, 1 + min(cfg.depth - 1, int(rng.expovariate(0.8))))
        chosen = sorted(rng.sample(range(start + 1, n), depth - 1)) if depth > 1 else []
        locks = []
        for layer in [start, *chosen]:
            locks.append(rng.choices(self.ranked[layer], cum_weights=self.cum[layer])[0])
        q = self.pending[tid]
        for i, name in enumerate(locks):
            op = 2 if i and rng.random() < 0.05 else 0
            mode = 1 if "rwsem" in name and rng.random() < 0.3 else 0
            q.append((op, name, mode, rng.choice(self.sites[name])))
        release = list(reversed(locks))
        if len(release) > 2 and rng.random() < 0.1:
            rng.shuffle(release)
        for name in release:
            q.append((1, name, 0, None))

    def events(self, n: int, elapsed: float) -> list[tuple[Any, ...]]:
        """About n background events (whole events; sessions interleave), plus the planted
        sessions due by `elapsed` seconds, as Agent rows."""
        now = time.time_ns()
        out: list[tuple[Any, ...]] = []
        rng = self.rng
        tids = self.tids
        for _ in range(n):
            tid = tids[rng.randrange(len(tids))]
            q = self.pending[tid]
            if not q:
                self._session(tid)
            op, name, mode, site = q.popleft()
            out.append((now, tid, op, name, mode, 0, 0, 0, site, self.tasks[tid]))
        while self.planted_due and self.planted_due[0][0] <= elapsed:
            _, e = self.planted_due.popleft()
            out += self._planted_session(e, now)
        return out

    def _planted_session(self, e: int, now: int) -> list[tuple[Any, ...]]:
        x, y = self.planted[e]
        self.planted_taken[e] += 1
        task = self.planted_task
        return [(now, PLANTED_TID, 0, x, 0, 0, 0, 0, f"planted_{e}_outer+0x10/0x80", task),
                (now, PLANTED_TID, 0, y, 0, 0, 0, 0, f"planted_{e}_inner+0x24/0x80", task),
                (now, PLANTED_TID, 1, y, 0, 0, 0, 0, None, task),
                (now, PLANTED_TID, 1, x, 0, 0, 0, 0, None, task)]

    def finish(self) -> list[tuple[Any, ...]]:
        """The rest: planted sessions not yet due, and the open sessions run to their end."""
        now = time.time_ns()
        out: list[tuple[Any, ...]] = []
        while self.planted_due:
            _, e = self.planted_due.popleft()
            out += self._planted_session(e, now)
        for tid in self.tids:
            q = self.pending[tid]
            while q:
                op, name, mode, site = q.popleft()
                out.append((now, tid, op, name, mode, 0, 0, 0, site, self.tasks[tid]))
        return out


def run_host(cfg: SimConfig, index: int, connection: Any) -> dict[str, Any]:
    """Run one simulated host for cfg.duration seconds; its Agent's counts."""
    from .client.sdk import Agent

    plan = make_plan(cfg)
    work = HostWorkload(cfg, plan, index)
    agent = Agent(connection, work.host, stream_id=f"simulate/{work.host}/{cfg.seed}/{time.time_ns()}",
                  batch_rows=cfg.batch_rows, batch_interval=cfg.batch_interval, overflow="block",
                  retry_for=cfg.retry_for)
    sent = 0
    start = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= cfg.duration:
                break
            rows = work.events(max(0, int(cfg.rate * elapsed) - sent), elapsed)
            if rows:
                agent.record(rows)
                sent += len(rows)
            time.sleep(min(0.02, max(0.0, cfg.duration - elapsed)))
        rows = work.finish()
        if rows:
            agent.record(rows)
        agent.close()
    except BaseException:
        agent.abort()
        raise
    st = agent.stats()
    return {"host": work.host, "events": st["recorded"], "acked": st["acked_events"], "batches": st["acked_batches"],
            "dropped": st["dropped"], "refused": st["refused_events"], "reconnects": st["reconnects"],
            "seconds": round(time.monotonic() - start, 3), "new_alerts": st["new_alerts"],
            "planted": [{"held": x, "taken": y, "times": n} for (x, y), n in zip(work.planted, work.planted_taken)]}


def _worker() -> int:
    """`python -m lockfleet.agent.simulator --worker`: one host; JSON config on stdin, result on stdout."""
    from .client.channel import AgentError, Connection

    spec = json.loads(sys.stdin.read())
    cfg = SimConfig(**spec["config"])
    c = spec["connection"]
    conn = Connection(c["target"], token=c.get("token", ""), tls_ca=_path(c.get("tls_ca")),
                      tls_cert=_path(c.get("tls_cert")), tls_key=_path(c.get("tls_key")),
                      server_name=c.get("server_name", ""))
    try:
        result = run_host(cfg, spec["index"], conn)
    except AgentError as exc:
        print(json.dumps({"host": make_plan(cfg).hosts[spec["index"]], "error": " ".join(str(exc).split())}))
        return EXIT_FAILURE
    print(json.dumps(result))
    return EXIT_OK


def _path(p: str | None) -> Path | None:
    return Path(p) if p else None


# -- the fleet -----------------------------------------------------------------------------

@dataclass
class FleetResult:
    plan: Plan
    hosts: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    found: list[bool] | None = None        # per planted cycle, with check

    @property
    def ok(self) -> bool:
        return all("error" not in h for h in self.hosts) and (self.found is None or all(self.found))

    def to_dict(self) -> dict[str, Any]:
        return {"hosts": self.hosts, "seconds": self.seconds,
                "events": sum(h.get("events", 0) for h in self.hosts),
                "acked": sum(h.get("acked", 0) for h in self.hosts),
                "dropped": sum(h.get("dropped", 0) for h in self.hosts),
                "layers": [list(layer) for layer in self.plan.layers],
                "planted": [{"locks": list(p.locks), "hosts": list(p.hosts),
                             **({"found": self.found[i]} if self.found is not None else {})}
                            for i, p in enumerate(self.plan.planted)],
                "ok": self.ok}


def run_fleet(cfg: SimConfig, connection: Any, check: Any = None, out: TextIO | None = None,
              python: str = sys.executable) -> FleetResult:
    """Start cfg.hosts agent processes, wait for them, and (with `check`, a Connection for the
    Query service) look for each planted cycle among the circular alerts. `out` gets progress."""
    cfg.check()
    plan = make_plan(cfg)
    say = (lambda text: print(text, file=out, flush=True)) if out is not None else (lambda text: None)
    say(f"lockfleet simulate: {cfg.hosts} host(s) x {cfg.rate:g} events/s x {cfg.duration:g} s to "
        f"{connection.target} (seed {cfg.seed})")
    say(f"  lock graph: {cfg.classes} classes in {cfg.layers} layers "
        f"({', '.join(str(len(layer)) for layer in plan.layers)}), Zipf {cfg.zipf:g} reuse, {cfg.threads} threads "
        f"per host, sessions of up to {cfg.depth} locks")
    for i, p in enumerate(plan.planted):
        links = ", ".join(f"{p.locks[k]} -> {p.locks[(k + 1) % len(p.locks)]} on {h}" for k, h in enumerate(p.hosts))
        say(f"  planted cycle {i + 1}: {links}")
    spec = {"config": asdict(cfg), "connection": {
        "target": connection.target, "token": connection.token, "server_name": connection.server_name,
        **{k: str(getattr(connection, k)) for k in ("tls_ca", "tls_cert", "tls_key") if getattr(connection, k)}}}
    start = time.monotonic()
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(cfg.hosts):
            worker = subprocess.Popen([python, "-m", "lockfleet.agent.simulator", "--worker"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            assert worker.stdin is not None
            worker.stdin.write(json.dumps({**spec, "index": i}))
            worker.stdin.close()
            procs.append(worker)
        result = FleetResult(plan)
        for i, proc in enumerate(procs):
            assert proc.stdout is not None
            text = proc.stdout.read()
            proc.wait()
            try:
                result.hosts.append(json.loads(text.strip().splitlines()[-1]))
            except (ValueError, IndexError):
                result.hosts.append({"host": plan.hosts[i], "error": f"the agent process exited with {proc.returncode}"})
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result.seconds = round(time.monotonic() - start, 3)
    for h in result.hosts:
        if "error" in h:
            say(f"  {h['host']}: FAILED: {h['error']}")
        else:
            planted = sum(x["times"] for x in h["planted"])
            say(f"  {h['host']}: {h['events']} events ({h['acked']} acked, {h['dropped']} dropped) in {h['batches']} "
                f"batches, {planted} planted session(s), {h['reconnects']} reconnect(s)")
    d = result.to_dict()
    say(f"  sent {d['events']} events from {cfg.hosts} host(s) in {result.seconds:.1f} s "
        f"({d['events'] / max(result.seconds, 1e-9):.0f} events/s)")
    if check is not None and plan.planted:
        from .client.fetch import fetch_alerts

        alerts = [a.data for a in fetch_alerts(check, kind="circular")]
        result.found = []
        for i, p in enumerate(plan.planted):
            hit = next((a for a in alerts if sorted(a["locks"]) == sorted(p.locks)), None)
            result.found.append(hit is not None)
            say(f"  planted cycle {i + 1}: " + (f"found as {hit['id']} on hosts {', '.join(hit['hosts'])}" if hit
                                                else "NOT found"))
    return result


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        sys.exit(_worker())
    print("usage: lockfleet simulate ... (this module's own entry point is for its worker processes)",
          file=sys.stderr)
    sys.exit(EXIT_USAGE)
