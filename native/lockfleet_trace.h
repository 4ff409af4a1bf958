/* The shared-memory layout between the pthread interposer (lockfleet_preload.c, inside every
 * traced process) and the sidecar that drains it (lockfleet trace, through the same library's
 * lockfleet_trace_* functions). One home for the layout: the sidecar never reads these structs
 * itself, it calls the accessors at the end of lockfleet_preload.c.
 *
 *   header | modules[] | classes[] | sites[] | rings[]
 *
 * A ring belongs to one thread of one process (single writer: the thread; single reader: the
 * sidecar). Tables (modules, lock classes, call sites) are shared by every process of the trace
 * (a forked child, an exec'd program) and filled lock-free: a slot is claimed by CAS
 * EMPTY -> BUSY, written, then published READY; its index is the id events carry. */
#ifndef LOCKFLEET_TRACE_H
#define LOCKFLEET_TRACE_H

#include <stdint.h>

#define LFT_MAGIC 0x31544b434f4c464cULL /* "LFLOCKT1" */
#define LFT_VERSION 1u

/* header.flags, set by the sidecar */
#define LFT_FLAG_CLASS_BY_SITE 1u /* class = call site of the first acquisition, always */
#define LFT_FLAG_DROP 2u          /* a full ring drops events (counted) instead of waiting */
#define LFT_FLAG_PRECISE 4u       /* each event reads the clock; else it takes header.clock_ns */
#define LFT_FLAG_TSC 8u           /* (with PRECISE) event times are raw x86 TSC ticks, converted by the sidecar */

/* ring states */
enum { LFT_RING_FREE = 0, LFT_RING_CLAIMING = 1, LFT_RING_OWNED = 2, LFT_RING_DONE = 3 };
/* table slot states */
enum { LFT_SLOT_EMPTY = 0, LFT_SLOT_BUSY = 1, LFT_SLOT_READY = 2 };
/* class kinds: how the class was chosen */
enum { LFT_CLASS_UNKNOWN = 0, LFT_CLASS_STATIC = 1, LFT_CLASS_INIT = 2, LFT_CLASS_SITE = 3 };
/* lock types */
enum { LFT_MUTEX = 0, LFT_RWLOCK = 1 };
/* event ops and modes: the values of CONTRACT section 2 (lockfleet.events) */
enum { LFT_OP_ACQUIRE = 0, LFT_OP_RELEASE = 1, LFT_OP_TRY = 2 };
enum { LFT_MODE_EXCLUSIVE = 0, LFT_MODE_SHARED = 1, LFT_MODE_RECURSIVE_READ = 2 };

#define LFT_PATH_MAX 248

struct lft_header {
    uint64_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t rings, ring_events;           /* ring_events: a power of two */
    uint32_t modules, classes, sites, pad0; /* table sizes (powers of two; slot 0 unused) */
    uint64_t module_off, class_off, site_off, ring_off, ring_stride, total_size;
    uint64_t heartbeat_ns;   /* CLOCK_MONOTONIC of the sidecar's last drain (atomic) */
    uint64_t untraced_threads; /* threads that found no free ring (atomic) */
    uint64_t table_full;     /* class/site lookups that found no slot (atomic) */
    uint64_t processes;      /* processes that attached (atomic) */
    uint64_t clock_ns;       /* CLOCK_REALTIME ns, kept current by the sidecar's ticker (atomic) */
    uint64_t pad[3];
};

struct lft_module { /* 256 bytes */
    uint32_t state;
    uint32_t hash;
    char path[LFT_PATH_MAX];
};

struct lft_class { /* 24 bytes; key (kind, module, offset) */
    uint32_t state;
    uint8_t kind, type, pad[2];
    uint32_t module, pad2;
    uint64_t offset; /* the ELF virtual address (address minus the module's load bias) */
};

struct lft_site { /* 16 bytes; key (module, offset) */
    uint32_t state;
    uint32_t module;
    uint64_t offset;
};

struct lft_event { /* 32 bytes */
    uint64_t ts;       /* CLOCK_REALTIME ns, or TSC ticks (header.flags) */
    uint64_t instance; /* the lock's address */
    uint32_t cls, site; /* table ids; 0 = none */
    uint8_t op, mode, pad[6];
};

struct lft_ring { /* 64-byte header, then ring_events events */
    uint32_t state, pid, tid, generation;
    uint64_t head;    /* written by the owner thread (release) */
    uint64_t tail;    /* written by the sidecar (release) */
    uint64_t dropped; /* events dropped on a full ring (LFT_FLAG_DROP or no sidecar) */
    char comm[16];
    uint64_t pad;
    struct lft_event ev[];
};

/* what lockfleet_trace_drain hands the sidecar: 40 bytes a row */
struct lft_out {
    int64_t ts;
    int64_t tid;
    uint64_t instance;
    uint32_t cls, site;
    uint8_t op, mode, pad[2];
    uint32_t ring;
};

#endif
