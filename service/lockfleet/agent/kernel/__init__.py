"""Event sources from kernels' lockdep: reports in kernel logs (`dmesg`), `/proc/lockdep` dumps
(`procdump` reads them, `procdump_events` turns them into events, `procdump_merge` merges several
machines' dumps), the small agent for kernel test machines (`procfs_agent`), and lock class names
made comparable across boots and kernels (`class_names`)."""
