"""An event source from native programs: the sidecar's side of the pthread interposer (`preload`),
ELF symbols for the sites it records (`elfsym`) and `lockfleet trace` (`trace`)."""
