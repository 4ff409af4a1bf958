"""lockfleet past one machine, on NATS JetStream: stateless gateways, derivation workers per
partition, one graph authority with a standby, and the archive compacted from the bus.

    agent --Push--> gateway --LF_EVENTS (by host partition)--> worker --LF_DERIVED--> authority
                                       \\--> bus-archive (Parquet)             \\--> LF_ALERTS

Above the engine, beside `server/` (which it reuses: the gateway's checks, the servicers, the
service that the authority is). `bus` holds the layout every role agrees on.
"""
