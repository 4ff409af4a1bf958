"""The one set of connection options (lockfleet.cli.connection) reaches every command that talks to
a service: `lockfleet dmesg --push` (which took only --target before) streams the seed report to a
service that wants TLS and an ingest token, is refused with the wrong token or no TLS, and every
such command lists the same options in its --help."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DIR, needs_shared  # noqa: E402  (fails under CI=true when missing)

INGEST, QUERY = "ingest-0123456789abcdef0123", "query-0123456789abcdef01234"
SEED = SHARED_DIR / "seed" / "lkml-bpf-deadlock-report.txt"
SEED_CYCLE = ["tracepoints_mutex", "cpu_hotplug_lock.rw_sem", "pmus_lock", "&cpuctx_mutex", "bpf_event_mutex"]
OPTIONS = ("--target", "--token", "--token-file", "--tls-ca", "--tls-cert", "--tls-key", "--tls-server-name")


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.mark.e2e
@needs_shared
def test_dmesg_push_over_tls_with_a_token(lockfleet_cli, serve_factory, certs, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ingest {INGEST}\nquery {QUERY}\n")
    tokens.chmod(0o600)
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           "--token-file", tokens, credentials=certs.client())
    tls = ("--target", server.target, "--tls-ca", str(certs.path("ca.pem")))

    token_file = tmp_path / "ingest-token"
    token_file.write_text(f"ingest {INGEST}\n")
    doc = json.loads(_ok(lockfleet_cli("dmesg", SEED, "--push", "--json", "--host", "lab-9", *tls,
                                       "--token-file", token_file)))
    (pushed,) = doc["pushed"]
    assert pushed["host"] == "lab-9" and pushed["events"] > 0 and pushed["duplicates"] == 0
    alerts = json.loads(_ok(lockfleet_cli("alerts", "--json", *tls, "--token", QUERY)))["alerts"]
    assert [(a["kind"], a["locks"], a["hosts"]) for a in alerts] == [("circular", SEED_CYCLE, ["lab-9"])]

    refused = lockfleet_cli("dmesg", SEED, "--push", "--host", "lab-9", *tls, "--token", QUERY)
    assert refused.returncode == 1 and refused.stderr.startswith("lockfleet dmesg:")
    assert refused.stderr.count("\n") == 1
    plain = lockfleet_cli("dmesg", SEED, "--push", "--host", "lab-9", "--target", server.target, "--token", INGEST)
    assert plain.returncode == 1 and plain.stderr.startswith("lockfleet dmesg:")
    unreadable = lockfleet_cli("dmesg", SEED, "--push", "--target", server.target, "--tls-ca", tmp_path / "none.pem")
    assert unreadable.returncode == 2 and "--tls-ca" in unreadable.stderr


@pytest.mark.parametrize("command", ["push", "alerts", "stats", "chain", "dmesg", "proc-lockdep", "simulate",
                                     "trace", "lock", "hosts", "export", "dot", "watch", "suppress",
                                     "unsuppress", "suppressions"])
def test_every_command_that_talks_to_a_service_has_the_same_options(command):
    from lockfleet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    options = {s for a in sub.choices[command]._actions for s in a.option_strings}
    assert set(OPTIONS) <= options, sorted(set(OPTIONS) - options)
