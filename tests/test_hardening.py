"""Security hardening against a real `lockfleet serve`: certificate and token rotation on SIGHUP
without a restart, per-host rate limits, oversized request metadata, a client that never reads its
acks, and TLS downgrade attempts (old protocol versions, weak ciphers). The threat model these
answer is docs/THREATS.md."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import warnings
from pathlib import Path

import grpc
import pytest

from lockfleet.agent import Connection, Refused, Stream, fetch_stats, push_streams, to_ipc
from lockfleet.v1 import lockfleet_pb2 as pb
from lockfleet.v1 import lockfleet_pb2_grpc as pb_grpc
from receivers import events, nest, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def handshake(target: str, ca: Path, **kw) -> ssl.SSLSocket | Exception:  # noqa: ANN003
    """A TLS handshake as a gRPC client makes it (ALPN h2), with the given versions and ciphers."""
    host, port = target.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if "ciphers" in kw:
            ctx.set_ciphers(kw["ciphers"])
        if "minv" in kw:
            ctx.minimum_version = kw["minv"]
        if "maxv" in kw:
            ctx.maximum_version = kw["maxv"]
    try:
        sock = socket.create_connection((host, int(port)), timeout=10)
        return ctx.wrap_socket(sock, server_hostname="localhost")
    except (ssl.SSLError, OSError) as exc:
        return exc


def fingerprint(target: str, ca: Path) -> str:
    tls = handshake(target, ca)
    assert isinstance(tls, ssl.SSLSocket), tls
    with tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def der_fingerprint(pem: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem.read_text())).hexdigest()


def new_server_cert(certs, out: Path) -> None:  # noqa: ANN001
    """Another certificate for localhost from the test CA, with a new key."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    run = lambda *a: subprocess.run(["openssl", *a], cwd=out.parent, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", *ec, "-keyout", "next.key", "-out", "next.csr", "-subj", "/CN=localhost")
    (out.parent / "next.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "next.csr", "-CA", str(certs.path("ca.pem")), "-CAkey", str(certs.path("ca.key")),
        "-CAcreateserial", "-out", "next.pem", "-days", "2", "-extfile", "next.ext")


def one_batch(tag: str) -> list[bytes]:
    return [to_ipc(events(nest(1, f"{tag}_a", f"{tag}_b")).to_batches()[0])]


def test_sighup_rotates_certificate_and_tokens_without_a_restart(certs, serve_factory, tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    cert, key, tokens = d / "cert.pem", d / "key.pem", d / "tokens"
    cert.write_bytes(certs.read("server.pem"))
    key.write_bytes(certs.read("server.key"))
    old_i, old_q, new_i, new_q = "ingest-old-0123456789", "query-old-0123456789", "ingest-new-0123456789", \
        "query-new-0123456789"
    tokens.write_text(f"ingest {old_i}\nquery {old_q}\n")
    server = serve_factory("--tls-cert", cert, "--tls-key", key, "--token-file", tokens, credentials=certs.client())
    ca = certs.path("ca.pem")
    pid = server.proc.pid
    as_ = lambda token: Connection(server.target, token=token, tls_ca=ca)  # noqa: E731
    push_streams(as_(old_i), "rot-1", [Stream("s", one_batch("rot1"))])
    assert fingerprint(server.target, ca) == der_fingerprint(certs.path("server.pem"))

    new_server_cert(certs, d / "next.pem")
    (d / "next.pem").replace(cert)
    (d / "next.key").replace(key)
    tokens.write_text(f"ingest {new_i}\nquery {new_q}\n")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "reloaded tokens and certificate" in server.log(), 30, "the reload")

    assert fingerprint(server.target, ca) == der_fingerprint(cert)        # new handshakes: the new certificate
    assert fingerprint(server.target, ca) != der_fingerprint(certs.path("server.pem"))
    with pytest.raises(Refused, match="UNAUTHENTICATED"):
        fetch_stats(as_(old_q))
    assert fetch_stats(as_(new_q))["events"] == 4                         # same process, state kept
    push_streams(as_(new_i), "rot-2", [Stream("s", one_batch("rot2"))])
    assert server.proc.pid == pid

    # a broken token file on the next SIGHUP: the current tokens stay, the service goes on
    tokens.write_text("ingest short\n")
    os.kill(pid, signal.SIGHUP)
    wait_for(lambda: "keeping the current tokens" in server.log(), 30, "the refused reload")
    assert fetch_stats(as_(new_q))["events"] == 8


def test_a_host_over_its_rate_is_slowed_and_others_are_not(serve_factory):
    rate = 400_000
    server = serve_factory("--max-host-bytes-per-second", str(rate))
    rows = nest(1, "rate_a", "rate_b") * 2000
    big = to_ipc(events(rows).to_batches()[0])
    greedy = [big] * max(4, (2 * rate) // len(big) + 1)               # ~2 s of its rate after the burst
    total = len(big) * len(greedy)
    took: dict[str, float] = {}

    def push(host: str, batches: list[bytes]) -> None:
        t0 = time.monotonic()
        # uncompressed: the limit counts the bytes on the wire, and `total` counts these
        push_streams(server.target, host, [Stream("s", batches)], compression="none")
        took[host] = time.monotonic() - t0

    g = threading.Thread(target=push, args=("greedy", greedy))
    g.start()
    time.sleep(0.5)
    push("polite", one_batch("polite"))
    g.join(60)
    assert took["greedy"] >= (total - rate) / rate * 0.9, (took, total)
    assert took["polite"] < 1.0, took
    stats = fetch_stats(server.target)
    assert stats["events"] == len(greedy) * len(rows) + 4
    limited = stats["ingest"]["rate_limited"]
    assert limited["greedy"]["waits"] >= 1 and "polite" not in limited


def test_oversized_metadata_is_refused_and_the_service_goes_on(lockfleet_server):
    with grpc.insecure_channel(lockfleet_server.target) as ch:
        stub = pb_grpc.QueryStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Stats(pb.StatsRequest(), metadata=(("x-padding", "a" * 64 * 1024),), timeout=10)
        assert err.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                                    grpc.StatusCode.UNAVAILABLE), err.value
        stub.Stats(pb.StatsRequest(), metadata=(("x-padding", "a" * 1024),), timeout=10)   # a normal one
    assert fetch_stats(lockfleet_server.target)["events"] == 0


def test_a_client_that_never_reads_its_acks_is_cut_off_and_others_go_on(serve_factory):
    server = serve_factory("--ack-stall-seconds", "2", "--max-inflight-per-stream", "4")
    # batches that skip ahead are refused with acks that repeat the (long) host and stream names,
    # so the unread acks fill the connection's flow-control window quickly
    host, stream = "deaf-" + "h" * 240, "s" * 250

    def flood():  # noqa: ANN202
        for i in range(200_000):
            yield pb.PushBatch(host=host, stream_id=stream, seq=i + 2, arrow_ipc=b"")

    channel = grpc.insecure_channel(server.target)
    call = pb_grpc.IngestStub(channel).Push(flood(), timeout=120)     # acks never read
    try:
        wait_for(lambda: "does not read its acks" in server.log(), 60, "the stalled call to be ended")
        wait_for(lambda: fetch_stats(server.target)["ingest"]["push_calls"] == 0, 30,
                 "the server to let go of the call (its thread and stream slot)")
        push_streams(server.target, "listening", [Stream("s", one_batch("ok"))])      # others go on
        stats = fetch_stats(server.target)
        assert stats["events"] == 4
        assert stats["ingest"]["stream_window_peak"] <= 4 and stats["ingest"]["stalled_calls"] == 1
    finally:
        call.cancel()
        channel.close()


def test_tls_downgrade_attempts_are_refused(certs, serve_factory):
    server = serve_factory("--tls-cert", certs.path("server.pem"), "--tls-key", certs.path("server.key"),
                           credentials=certs.client())
    ca = certs.path("ca.pem")
    ok = handshake(server.target, ca, maxv=ssl.TLSVersion.TLSv1_2)
    assert isinstance(ok, ssl.SSLSocket), ok
    with ok:
        assert ok.version() == "TLSv1.2" and ok.selected_alpn_protocol() == "h2"
        name, _, _ = ok.cipher()
        assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name), name   # forward secret, AEAD
    best = handshake(server.target, ca)
    assert isinstance(best, ssl.SSLSocket) and best.version() == "TLSv1.3"
    best.close()
    weak = {"TLS 1.0": dict(minv=ssl.TLSVersion.TLSv1, maxv=ssl.TLSVersion.TLSv1, ciphers="ALL:@SECLEVEL=0"),
            "TLS 1.1": dict(minv=ssl.TLSVersion.TLSv1_1, maxv=ssl.TLSVersion.TLSv1_1, ciphers="ALL:@SECLEVEL=0"),
            "CBC-SHA1": dict(maxv=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"),
            "NULL/RC4/3DES/export": dict(maxv=ssl.TLSVersion.TLSv1_2,
                                         ciphers="NULL:eNULL:aNULL:RC4:3DES:DES:EXP:@SECLEVEL=0")}
    for what, kw in weak.items():
        got = handshake(server.target, ca, **kw)
        if isinstance(got, ssl.SSLSocket):
            got.close()
            pytest.fail(f"the server accepted a {what} handshake ({got.version()}, {got.cipher()})")
    assert fetch_stats(Connection(server.target, tls_ca=ca))["events"] == 0        # and it still serves
