"""Who gets in: loopback only without TLS; TLS; mTLS binding streams to the certificate's host;
bearer tokens per role, through the `lockfleet` commands; the token file and certificate subject
parsing; and the start-up refusals that keep a misconfigured service from listening."""

from __future__ import annotations

import json

import grpc
import pytest

from lockfleet.server.auth import TokenFileError, load_tokens, subject_fields

INGEST, QUERY = "ingest-0123456789abcdef0123", "query-0123456789abcdef01234"


def _ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_text(f"ingest {INGEST}\nquery {QUERY}\n")
    path.chmod(0o600)
    return path


def test_token_file_format_and_constant_time_roles(tmp_path):
    path = tmp_path / "t"
    path.write_text(f"# comment\n\ningest {INGEST}\nquery {QUERY}\ningest {INGEST[::-1]}\n")
    tokens = load_tokens(path)
    assert tokens.role_of(INGEST.encode()) == "ingest" and tokens.role_of(INGEST[::-1].encode()) == "ingest"
    assert tokens.role_of(QUERY.encode()) == "query"
    assert tokens.role_of(b"") == "" and tokens.role_of(INGEST.encode() + b"x") == ""
    for text, words in [("root abcdefghijklmnopqrstuvwxyz\n", "line 1"), ("ingest short\n", "16 characters"),
                        ("# nothing\n", "no tokens"), ("ingest a b\n", "line 1")]:
        path.write_text(text)
        with pytest.raises(TokenFileError, match=words):
            load_tokens(path)


def test_certificate_subject_fields():
    assert subject_fields("OU=lockfleet-relay,CN=relay-1") == [("OU", "lockfleet-relay"), ("CN", "relay-1")]
    assert subject_fields(r"CN=a\,b,O=x") == [("CN", "a,b"), ("O", "x")]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_tls_with_tokens_through_the_commands(lockfleet_cli, serve_factory, certs, token_file, scenario_files):
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           "--token-file", token_file, credentials=certs.client())
    tls = ("--target", server.target, "--tls-ca", certs.path("ca.pem"))
    _ok(lockfleet_cli("push", scenario_files["boot-0"], "--host", "boot-0", *tls, "--token-file", token_file))
    stats = json.loads(_ok(lockfleet_cli("stats", "--json", *tls, "--token", QUERY)))
    assert stats["events"] > 0
    # plain gRPC to a TLS port does not get through
    proc = lockfleet_cli("stats", "--target", server.target, "--token", QUERY)
    assert proc.returncode == 1 and server.target in _one_line(proc.stderr)
    # the query token does not push; the ingest token does not query; no token does nothing
    proc = lockfleet_cli("push", scenario_files["perf-1"], "--host", "perf-1", *tls, "--token", QUERY)
    assert proc.returncode == 1 and "PERMISSION_DENIED" in _one_line(proc.stderr)
    proc = lockfleet_cli("alerts", *tls, "--token", INGEST)
    assert proc.returncode == 1 and "PERMISSION_DENIED" in _one_line(proc.stderr)
    proc = lockfleet_cli("chain", "a", "b", *tls)
    assert proc.returncode == 1 and "UNAUTHENTICATED" in _one_line(proc.stderr)
    assert json.loads(_ok(lockfleet_cli("stats", "--json", *tls, "--token", QUERY)))["events"] == stats["events"]
    # health stays open (for load balancers), over TLS
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with server.channel() as ch:
        assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10).status == 1


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_mtls_binds_streams_to_the_certificate_host(lockfleet_cli, serve_factory, certs, scenario_files):
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           "--client-ca", certs.path("ca.pem"), credentials=certs.client("h1"))

    def as_(who: str) -> tuple[str, ...]:
        return ("--target", server.target, "--tls-ca", str(certs.path("ca.pem")),
                "--tls-cert", str(certs.path(f"{who}.pem")), "--tls-key", str(certs.path(f"{who}.key")))

    _ok(lockfleet_cli("push", scenario_files["boot-0"], "--host", "h1", *as_("h1")))
    proc = lockfleet_cli("push", scenario_files["boot-0"], "--host", "h2", *as_("h1"))
    assert proc.returncode == 1
    line = _one_line(proc.stderr)
    assert "PERMISSION_DENIED" in line and "'h2'" in line and "lockfleet-relay" in line
    _ok(lockfleet_cli("push", scenario_files["perf-1"], "--host", "h2", *as_("h2")))
    _ok(lockfleet_cli("push", scenario_files["perf-2"], "--host", "perf-2", *as_("relay")))
    proc = lockfleet_cli("stats", "--target", server.target, "--tls-ca", certs.path("ca.pem"))   # no client cert
    assert proc.returncode == 1
    proc = lockfleet_cli("stats", "--json", *as_("stranger"))                                     # another CA
    assert proc.returncode == 1
    stats = json.loads(_ok(lockfleet_cli("stats", "--json", *as_("h1"))))
    assert stats["ingest"]["streams"] == 3 and stats["hosts"] >= 3


@pytest.mark.parametrize("args,words", [
    (("--listen", "0.0.0.0:0"), "loopback"),
    (("--listen", "0.0.0.0:0", "--tls-cert", "{server.pem}", "--tls-key", "{server.key}"), "no client authentication"),
    (("--client-ca", "{ca.pem}"), "--client-ca needs --tls-cert"),
    (("--tls-cert", "{server.pem}"), "go together"),
    (("--tls-cert", "{missing.pem}", "--tls-key", "{server.key}"), "cannot read"),
    (("--tls-cert", "{server.csr}", "--tls-key", "{server.key}"), "no PEM certificate"),
    (("--tls-cert", "{h1.pem}", "--tls-key", "{server.key}"), "not a certificate and its private key"),
    (("--token-file", "{missing}"), "--token-file"),
])
def test_serve_refuses_to_start_insecurely_or_misconfigured(lockfleet_cli, certs, tmp_path, args, words):
    filled = [str(certs.path(a[1:-1])) if a.startswith("{") else a for a in args]
    listen = () if "--listen" in args else ("--listen", "127.0.0.1:0")
    proc = lockfleet_cli("serve", "--data-dir", tmp_path / "d", *listen, *filled)
    assert proc.returncode == 2, proc.stderr
    assert words in _one_line(proc.stderr.strip().splitlines()[-1])


def test_grpc_refuses_plaintext_to_tls(serve_factory, certs):
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           "--token-file", _tokens(serve_factory, certs), credentials=certs.client())
    from lockfleet.v1 import lockfleet_pb2 as pb
    from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc

    with grpc.insecure_channel(server.target) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.QueryServiceStub(ch).Stats(pb.StatsRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def _tokens(_factory, certs):
    path = certs.dir / "tokens-plain"
    path.write_text(f"ingest {INGEST}\n")
    return path
