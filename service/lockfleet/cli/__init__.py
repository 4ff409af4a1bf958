"""The `lockfleet` command, one module per command family:

- `serve`: the service (and, with --bus, a cluster gateway);
- `push`: event files sent as an agent would;
- `queries`: alerts, stats, chain, lock, hosts, export, dot, watch; `suppressions`: suppress,
  unsuppress, suppressions; `tables`: how they print;
- `kernel_logs`: dmesg and proc-lockdep; `trace`: native programs; `simulate`: a simulated fleet;
- `offline`: analyze, diff, report; `cluster`: worker, authority, bus-archive, cluster-demo, health;
  `demo`;
- `connection`: the one set of connection options (--target, TLS, tokens) of every command that
  talks to a service; `common`: exit statuses, `CliError` and the table from error to exit status.

Nothing else in lockfleet imports this package. Exit status: 0 on success, 2 on bad usage or bad
input (a one-line reason on stderr), 1 on any other failure."""

from .main import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
