"""The client SDK: the `Agent` that streams lock events to a service and keeps each batch until
it is acknowledged, how to reach a service (address, TLS, token: `channel`), event files
(`event_files`), pushing ordered streams of batches (`push`) and fetching alerts, chains and
counters from the Query service (`fetch`)."""
