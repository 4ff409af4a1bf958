"""Arrow IPC on the wire: encoding a batch for `PushBatch.arrow_ipc`, with Arrow IPC body
compression (LZ4 frame or zstd) when the service says it reads it.

Negotiation needs no new message: at the start of every Push call the service sends the initial
metadata `lockfleet-ipc-codecs: lz4,zstd` (the codecs it decodes). An Agent with
`compression="auto"` (the default) compresses the batches it sends on a call with the first codec
of its preference the service named; a service that sends no such metadata (an older one) gets
uncompressed batches, and an older agent's uncompressed batches are read as always.
"""

from __future__ import annotations

import pyarrow as pa

CODECS_METADATA = "lockfleet-ipc-codecs"
CODECS = ("lz4", "zstd")                 # Arrow IPC's body compression codecs, as pyarrow names them
COMPRESSION_CHOICES = ("auto", "none", *CODECS)
PREFERENCE = ("lz4", "zstd")             # auto: LZ4 first (cheap on both ends; zstd packs tighter)


def available_codecs() -> tuple[str, ...]:
    """The codecs this pyarrow build reads and writes."""
    return tuple(c for c in CODECS if pa.Codec.is_available(c))


def parse_codecs(metadata: object) -> tuple[str, ...]:
    """The codecs a service named in its initial metadata (a sequence of (key, value) pairs)."""
    for key, value in metadata or ():
        if key == CODECS_METADATA:
            text = value.decode() if isinstance(value, bytes) else str(value)
            return tuple(c for c in (x.strip() for x in text.split(",")) if c in CODECS)
    return ()


def choose_codec(wanted: str, offered: tuple[str, ...]) -> str:
    """The codec to send with: "" for none. `wanted` is one of COMPRESSION_CHOICES; a codec the
    service did not offer is not used (the batch goes uncompressed rather than refused)."""
    if wanted == "none":
        return ""
    usable = [c for c in offered if c in available_codecs()]
    if wanted == "auto":
        return next((c for c in PREFERENCE if c in usable), "")
    return wanted if wanted in usable else ""


def encode(batch: pa.RecordBatch, codec: str = "") -> bytes:
    """One batch as Arrow IPC stream bytes (schema + batch), compressed with `codec` if given."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec) if codec else None
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def reencode(ipc: bytes, codec: str) -> bytes:
    """IPC stream bytes written again with `codec` (the batches as they are: no copy of values)."""
    with pa.ipc.open_stream(pa.py_buffer(ipc)) as reader:
        schema = reader.schema
        batches = list(reader)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema, options=pa.ipc.IpcWriteOptions(compression=codec)) as writer:
        for b in batches:
            writer.write_batch(b)
    return sink.getvalue().to_pybytes()
