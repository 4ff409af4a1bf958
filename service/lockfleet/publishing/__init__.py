"""Publishing findings: the durable outbox and sink cursors (`outbox`), the sinks (`sinks`: JSONL,
Alertmanager, webhook), suppressions and blessed orders (`suppress`), and the publisher threads
(`publisher`). The server wires them up (`lockfleet.server.publishing`)."""
