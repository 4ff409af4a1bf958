/* lockfleet's pthread interposer: loaded with LD_PRELOAD by `lockfleet trace`, it wraps
 *   pthread_mutex_lock/trylock/timedlock/clocklock/unlock, pthread_rwlock_rdlock/wrlock/tryrdlock/
 *   trywrlock/timedrdlock/timedwrlock/clockrdlock/clockwrlock/unlock, pthread_cond_wait/
 *   timedwait/clockwait (the mutex is released while waiting and taken again after),
 *   pthread_mutex_init/destroy, pthread_rwlock_init/destroy
 * and records one event per successful acquisition and per release into a ring of its own
 * thread in shared memory (lockfleet_trace.h). The hot path takes no lock and makes no system
 * call: a thread-local pointer, two probes of process-local hash tables (lock address -> class,
 * return address -> call site), a held-lock stack, and a store-release of the ring's head.
 * Failed trylocks and timed-out timedlocks record nothing.
 *
 * A lock's class (lockdep's key) is, by default:
 *   - for a lock initialized with pthread_mutex_init / pthread_rwlock_init: the call site of the
 *     init (lockdep's static key per init site: every lock made there is one class);
 *   - else for a lock inside a loaded module's data (a static or global lock): its address as
 *     module + offset (the sidecar names it by the symbol that holds it);
 *   - else (a heap or stack lock set up by an initializer, e.g. C++ std::mutex): the call site of
 *     its first acquisition.
 * With LFT_FLAG_CLASS_BY_SITE, every lock's class is the call site of its first acquisition.
 * Addresses are kept as (module path, ELF virtual address), so that the same binary gives the
 * same names on every host; the sidecar turns them into symbol names.
 *
 * The environment variable LOCKFLEET_TRACE_SHM names the shared memory (a path the process
 * opens); without it the library stays inert and every wrapper only calls through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "lockfleet_trace.h"

#define API __attribute__((visibility("default")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#define RET_ADDR() __builtin_extract_return_addr(__builtin_return_address(0))

#define ALD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ARLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define AST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ACAS(p, e, v) __atomic_compare_exchange_n((p), (e), (v), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define AADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

#define HELD_MAX 48
#define PROBES 64
#define STALE_NS 2000000000ull /* a sidecar silent this long is gone: full rings drop */

/* -- the real functions ------------------------------------------------------------------- */

typedef int (*lock_fn)(void *);
typedef int (*timed_fn)(void *, const struct timespec *);
typedef int (*init_fn)(void *, const void *);
typedef int (*cwait_fn)(pthread_cond_t *, pthread_mutex_t *);
typedef int (*ctimed_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
typedef int (*clock_fn)(void *, clockid_t, const struct timespec *);
typedef int (*cclock_fn)(pthread_cond_t *, pthread_mutex_t *, clockid_t, const struct timespec *);

static struct {
    lock_fn mutex_lock, mutex_trylock, mutex_unlock, mutex_destroy;
    timed_fn mutex_timedlock;
    init_fn mutex_init, rwlock_init;
    lock_fn rd, wr, tryrd, trywr, rw_unlock, rw_destroy;
    timed_fn timedrd, timedwr;
    cwait_fn cond_wait;
    ctimed_fn cond_timedwait;
    clock_fn mutex_clocklock, clockrd, clockwr; /* glibc 2.30+; NULL before */
    cclock_fn cond_clockwait;
} real;

static void *next_sym(const char *name, const char *version) {
    void *p = version ? dlvsym(RTLD_NEXT, name, version) : NULL;
    return p ? p : dlsym(RTLD_NEXT, name);
}

static void resolve(void) {
    if (real.mutex_lock)
        return;
    real.mutex_trylock = (lock_fn)next_sym("pthread_mutex_trylock", NULL);
    real.mutex_unlock = (lock_fn)next_sym("pthread_mutex_unlock", NULL);
    real.mutex_destroy = (lock_fn)next_sym("pthread_mutex_destroy", NULL);
    real.mutex_timedlock = (timed_fn)next_sym("pthread_mutex_timedlock", NULL);
    real.mutex_init = (init_fn)next_sym("pthread_mutex_init", NULL);
    real.rwlock_init = (init_fn)next_sym("pthread_rwlock_init", NULL);
    real.rd = (lock_fn)next_sym("pthread_rwlock_rdlock", NULL);
    real.wr = (lock_fn)next_sym("pthread_rwlock_wrlock", NULL);
    real.tryrd = (lock_fn)next_sym("pthread_rwlock_tryrdlock", NULL);
    real.trywr = (lock_fn)next_sym("pthread_rwlock_trywrlock", NULL);
    real.rw_unlock = (lock_fn)next_sym("pthread_rwlock_unlock", NULL);
    real.rw_destroy = (lock_fn)next_sym("pthread_rwlock_destroy", NULL);
    real.timedrd = (timed_fn)next_sym("pthread_rwlock_timedrdlock", NULL);
    real.timedwr = (timed_fn)next_sym("pthread_rwlock_timedwrlock", NULL);
    /* the current condition variable ABI, not the 2.2.5 compatibility one */
    real.cond_wait = (cwait_fn)next_sym("pthread_cond_wait", "GLIBC_2.3.2");
    real.cond_timedwait = (ctimed_fn)next_sym("pthread_cond_timedwait", "GLIBC_2.3.2");
    real.mutex_clocklock = (clock_fn)next_sym("pthread_mutex_clocklock", NULL);
    real.clockrd = (clock_fn)next_sym("pthread_rwlock_clockrdlock", NULL);
    real.clockwr = (clock_fn)next_sym("pthread_rwlock_clockwrlock", NULL);
    real.cond_clockwait = (cclock_fn)next_sym("pthread_cond_clockwait", NULL);
    AST(&real.mutex_lock, (lock_fn)next_sym("pthread_mutex_lock", NULL));
}

/* -- process state ------------------------------------------------------------------------ */

struct held {
    uintptr_t inst;
    uint32_t cls, site;
    uint8_t mode, op;
    uint16_t depth;
};

struct thr {
    struct lft_ring *ring;
    uint64_t head, limit; /* limit: head may grow up to it before the tail is read again */
    uint32_t nheld;
    struct held held[HELD_MAX];
};

#define THR_DEAD ((struct thr *)1) /* this thread is not traced */

static __thread struct thr *tls_thr __attribute__((tls_model("initial-exec")));
static __thread int tls_busy __attribute__((tls_model("initial-exec")));

struct cache_slot { /* lock address -> class | read mode << 32 | 1 << 40; code address -> site */
    uintptr_t key;
    uint64_t val;
};

static struct lft_header *hdr;  /* NULL: not attached, every wrapper calls through */
static char *shm;
static uint32_t ring_mask;
static int precise, use_tsc, class_by_site, drop_full;
static pthread_key_t thr_key;
static struct cache_slot *inst_cache, *site_cache;
#define INST_CACHE (1u << 16)
#define SITE_CACHE (1u << 14)

struct modmap { /* process-local: link map -> module id */
    const void *lm;
    uint32_t id;
};
#define MODMAP_MAX 128
static struct modmap modmap[MODMAP_MAX];
static uint32_t nmodmap;
static uint32_t modmap_lock; /* a spin flag: only on the slow path */
static char exe_path[LFT_PATH_MAX];

/* An event's time. By default the clock the sidecar's ticker keeps in the header (a load from a
 * cache line that changes once per tick: its resolution is the tick, 1 ms); with
 * LFT_FLAG_PRECISE, the TSC or CLOCK_REALTIME read per event (tens of ns each). The order of a
 * thread's events is their order in its ring either way. */
static inline uint64_t now_ts(void) {
    if (LIKELY(!precise))
        return ARLX(&hdr->clock_ns);
#if defined(__x86_64__) || defined(__i386__)
    if (use_tsc)
        return __rdtsc();
#endif
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static void pause_briefly(void) {
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

/* -- shared tables (slow path) -------------------------------------------------------------- */

static uint32_t fnv(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

/* Wait until a BUSY slot is READY; 0 when it never becomes so (its writer died mid-write). */
static int wait_ready(uint32_t *state) {
    for (int i = 0; i < 100000; i++) {
        if (ALD(state) == LFT_SLOT_READY)
            return 1;
        sched_yield();
    }
    return 0;
}

static uint32_t module_id(const char *path) {
    struct lft_module *tab = (struct lft_module *)(shm + hdr->module_off);
    uint32_t mask = hdr->modules - 1, h = fnv(path);
    for (uint32_t i = 0; i < PROBES && i < hdr->modules; i++) {
        uint32_t idx = (h + i) & mask;
        if (idx == 0)
            continue;
        struct lft_module *m = &tab[idx];
        uint32_t st = ALD(&m->state);
        if (st == LFT_SLOT_EMPTY) {
            uint32_t expect = LFT_SLOT_EMPTY;
            if (ACAS(&m->state, &expect, LFT_SLOT_BUSY)) {
                m->hash = h;
                strncpy(m->path, path, LFT_PATH_MAX - 1);
                m->path[LFT_PATH_MAX - 1] = 0;
                AST(&m->state, LFT_SLOT_READY);
                return idx;
            }
            st = expect;
        }
        if (st == LFT_SLOT_BUSY && !wait_ready(&m->state))
            continue;
        if (m->hash == h && strncmp(m->path, path, LFT_PATH_MAX - 1) == 0)
            return idx;
    }
    AADD(&hdr->table_full, 1);
    return 0;
}

/* (kind, module, offset) -> class id, or (module, offset) -> site id (kind < 0) */
static uint32_t table_id(int kind, uint8_t type, uint32_t module, uint64_t offset) {
    int is_class = kind >= 0;
    uint32_t n = is_class ? hdr->classes : hdr->sites, mask = n - 1;
    char *base = shm + (is_class ? hdr->class_off : hdr->site_off);
    size_t stride = is_class ? sizeof(struct lft_class) : sizeof(struct lft_site);
    uint64_t h = mix(offset ^ ((uint64_t)module << 40) ^ ((uint64_t)(kind + 1) << 56));
    for (uint32_t i = 0; i < PROBES; i++) {
        uint32_t idx = (uint32_t)(h + i) & mask;
        if (idx == 0)
            continue;
        uint32_t *state = (uint32_t *)(base + stride * idx);
        uint32_t st = ALD(state);
        if (st == LFT_SLOT_EMPTY) {
            uint32_t expect = LFT_SLOT_EMPTY;
            if (ACAS(state, &expect, LFT_SLOT_BUSY)) {
                if (is_class) {
                    struct lft_class *c = (struct lft_class *)state;
                    c->kind = (uint8_t)kind;
                    c->type = type;
                    c->module = module;
                    c->offset = offset;
                } else {
                    struct lft_site *s = (struct lft_site *)state;
                    s->module = module;
                    s->offset = offset;
                }
                AST(state, LFT_SLOT_READY);
                return idx;
            }
            st = expect;
        }
        if (st == LFT_SLOT_BUSY && !wait_ready(state))
            continue;
        if (is_class) {
            struct lft_class *c = (struct lft_class *)state;
            if (c->kind == kind && c->module == module && c->offset == offset)
                return idx;
        } else {
            struct lft_site *s = (struct lft_site *)state;
            if (s->module == module && s->offset == offset)
                return idx;
        }
    }
    AADD(&hdr->table_full, 1);
    return 0;
}

/* An address -> (module id, ELF virtual address); 0 when it is in no loaded module. */
static int locate(const void *addr, uint32_t *module, uint64_t *offset) {
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(addr, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return 0;
    *offset = (uint64_t)(uintptr_t)addr - (uint64_t)lm->l_addr;
    while (__atomic_exchange_n(&modmap_lock, 1, __ATOMIC_ACQUIRE))
        sched_yield();
    uint32_t id = 0;
    for (uint32_t i = 0; i < nmodmap; i++)
        if (modmap[i].lm == lm) {
            id = modmap[i].id;
            break;
        }
    if (!id) {
        const char *path = lm->l_name && lm->l_name[0] ? lm->l_name : exe_path;
        id = module_id(path);
        if (id && nmodmap < MODMAP_MAX)
            modmap[nmodmap++] = (struct modmap){lm, id};
    }
    AST(&modmap_lock, 0);
    *module = id;
    return id != 0;
}

static uint32_t site_class(const void *ret, int kind, uint8_t type) {
    uint32_t module = 0;
    uint64_t offset = (uint64_t)(uintptr_t)ret;
    locate(ret, &module, &offset);
    return table_id(kind, type, module, offset);
}

static uint8_t read_mode_of(const void *lock, uint8_t type) {
    if (type != LFT_RWLOCK)
        return LFT_MODE_EXCLUSIVE;
#ifdef __GLIBC__
    /* glibc keeps the rwlock's kind in __data.__flags: readers of a writer-preferring rwlock
     * queue behind a waiting writer (a shared, non-recursive read); otherwise a reader gets in
     * while the lock is read-held, whoever waits (a recursive read, as the kernel's rwlock_t). */
    const pthread_rwlock_t *rw = lock;
    if (rw->__data.__flags == PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP)
        return LFT_MODE_SHARED;
#endif
    return LFT_MODE_RECURSIVE_READ;
}

/* -- process-local caches ----------------------------------------------------------------- */

static inline struct cache_slot *cache_find(struct cache_slot *tab, uint32_t size, uintptr_t key, int insert) {
    uint64_t h = mix(key);
    for (uint32_t i = 0; i < PROBES; i++) {
        struct cache_slot *s = &tab[(h + i) & (size - 1)];
        uintptr_t k = ALD(&s->key);
        if (k == key)
            return s;
        if (k == 0) {
            if (!insert)
                return NULL;
            uintptr_t expect = 0;
            if (ACAS(&s->key, &expect, key) || expect == key)
                return s;
        }
    }
    return NULL;
}

static void cache_put(struct cache_slot *tab, uint32_t size, uintptr_t key, uint64_t val) {
    struct cache_slot *s = cache_find(tab, size, key, 1);
    if (s)
        AST(&s->val, val);
    else
        AADD(&hdr->table_full, 1);
}

#define INST_VAL(cls, rmode) ((uint64_t)(cls) | ((uint64_t)(rmode) << 32) | (1ull << 40))

/* class | read mode << 32 of a lock, deciding it on first sight */
static uint64_t inst_class(const void *lock, const void *ret, uint8_t type) {
    struct cache_slot *s = cache_find(inst_cache, INST_CACHE, (uintptr_t)lock, 0);
    uint64_t v = s ? ALD(&s->val) : 0;
    if (LIKELY(v))
        return v;
    tls_busy++;
    uint32_t cls = 0, module;
    uint64_t offset;
    if (!class_by_site && locate(lock, &module, &offset))
        cls = table_id(LFT_CLASS_STATIC, type, module, offset);
    if (!cls)
        cls = site_class(ret, LFT_CLASS_SITE, type);
    v = INST_VAL(cls, read_mode_of(lock, type));
    cache_put(inst_cache, INST_CACHE, (uintptr_t)lock, v);
    tls_busy--;
    return v;
}

static inline uint32_t site_id(const void *ret) {
    struct cache_slot *s = cache_find(site_cache, SITE_CACHE, (uintptr_t)ret, 0);
    uint64_t v = s ? ALD(&s->val) : 0;
    if (LIKELY(v))
        return (uint32_t)v;
    tls_busy++;
    uint32_t id = site_class(ret, -1, 0);
    cache_put(site_cache, SITE_CACHE, (uintptr_t)ret, id | (1ull << 40));
    tls_busy--;
    return id;
}

/* -- threads and rings -------------------------------------------------------------------- */

static struct lft_ring *ring_at(uint32_t i) {
    return (struct lft_ring *)(shm + hdr->ring_off + (uint64_t)i * hdr->ring_stride);
}

static struct lft_ring *claim_ring(void) {
    pid_t pid = getpid(), tid = (pid_t)syscall(SYS_gettid);
    uint32_t start = (uint32_t)mix((uint64_t)tid) % hdr->rings;
    for (uint32_t k = 0; k < hdr->rings; k++) {
        struct lft_ring *r = ring_at((start + k) % hdr->rings);
        uint32_t expect = LFT_RING_FREE;
        if (ARLX(&r->state) != LFT_RING_FREE || !ACAS(&r->state, &expect, LFT_RING_CLAIMING))
            continue;
        r->pid = (uint32_t)pid;
        r->tid = (uint32_t)tid;
        r->generation++;
        memset(r->comm, 0, sizeof r->comm);
        prctl(PR_GET_NAME, r->comm, 0, 0, 0);
        /* fault the ring in now, not one page at a time on the hot path (Linux 5.14+; a no-op
         * elsewhere) */
        madvise(r, hdr->ring_stride, MADV_POPULATE_WRITE);
        AST(&r->state, LFT_RING_OWNED);
        return r;
    }
    AADD(&hdr->untraced_threads, 1);
    return NULL;
}

static void thr_bind(struct thr *t, struct lft_ring *r) {
    t->ring = r;
    t->head = ARLX(&r->head);
    t->limit = ALD(&r->tail) + hdr->ring_events;
}

static struct thr *thr_new(void) {
    if (!hdr || tls_thr == THR_DEAD)
        return NULL;
    tls_busy++;
    struct thr *t = NULL;
    struct lft_ring *r = claim_ring();
    if (r) {
        t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (t == MAP_FAILED) {
            t = NULL;
            AST(&r->state, LFT_RING_DONE);
        } else {
            thr_bind(t, r);
            pthread_setspecific(thr_key, t);
        }
    }
    tls_thr = t ? t : THR_DEAD;
    tls_busy--;
    return t;
}

/* the thread exits: its ring is left to the sidecar to drain and free */
static void thr_exit(void *arg) {
    struct thr *t = arg;
    tls_thr = THR_DEAD;
    if (!t)
        return;
    AST(&t->ring->state, LFT_RING_DONE);
    munmap(t, sizeof *t);
}

static inline struct thr *enter(void) {
    struct thr *t = tls_thr;
    if (LIKELY((uintptr_t)t > 1) && LIKELY(!tls_busy))
        return t;
    if (t == THR_DEAD || tls_busy || !hdr)
        return NULL;
    return thr_new();
}

/* room for one more event: wait for the sidecar, or drop when told to or when it is gone */
static int make_room(struct thr *t) {
    struct lft_ring *r = t->ring;
    for (;;) {
        t->limit = ALD(&r->tail) + hdr->ring_events;
        if (t->head < t->limit)
            return 1;
        if (drop_full || mono_ns() - ALD(&hdr->heartbeat_ns) > STALE_NS) {
            AADD(&r->dropped, 1);
            return 0;
        }
        pause_briefly();
    }
}

static inline void emit(struct thr *t, uintptr_t inst, uint32_t cls, uint32_t site, uint8_t op, uint8_t mode) {
    if (UNLIKELY(t->head >= t->limit) && !make_room(t))
        return;
    struct lft_ring *r = t->ring;
    struct lft_event *e = &r->ev[t->head & ring_mask];
    e->ts = now_ts();
    e->instance = inst;
    e->cls = cls;
    e->site = site;
    e->op = op;
    e->mode = mode;
    AST(&r->head, ++t->head);
}

/* -- acquisition and release -------------------------------------------------------------- */

static inline void on_acquire(struct thr *t, const void *lock, const void *ret, uint8_t type, uint8_t op, int read) {
    uint64_t v = inst_class(lock, ret, type);
    uint32_t cls = (uint32_t)v;
    uint8_t mode = read ? (uint8_t)(v >> 32) : LFT_MODE_EXCLUSIVE;
    uintptr_t inst = (uintptr_t)lock;
    if (type == LFT_MUTEX) {
        /* a mutex this thread already holds, taken again with success: a recursive mutex,
         * recorded once, at its outermost lock and unlock */
        for (uint32_t i = t->nheld; i-- > 0;)
            if (t->held[i].inst == inst) {
                t->held[i].depth++;
                return;
            }
    }
    uint32_t site = site_id(ret);
    if (t->nheld < HELD_MAX)
        t->held[t->nheld++] = (struct held){inst, cls, site, mode, op, 1};
    emit(t, inst, cls, site, op, mode);
}

static inline void on_release(struct thr *t, const void *lock, const void *ret, uint8_t type) {
    uintptr_t inst = (uintptr_t)lock;
    uint32_t cls;
    for (uint32_t i = t->nheld; i-- > 0;) {
        struct held *h = &t->held[i];
        if (h->inst != inst)
            continue;
        if (h->depth > 1) {
            h->depth--;
            return;
        }
        cls = h->cls;
        memmove(h, h + 1, (t->nheld - i - 1) * sizeof *h);
        t->nheld--;
        emit(t, inst, cls, 0, LFT_OP_RELEASE, 0);
        return;
    }
    /* not taken by this thread (or before tracing began): the service decides (bad_unlock) */
    cls = (uint32_t)inst_class(lock, ret, type);
    emit(t, inst, cls, 0, LFT_OP_RELEASE, 0);
}

/* -- the wrappers ------------------------------------------------------------------------- */

/* a robust mutex whose owner died is acquired all the same (EOWNERDEAD) */
#define TAKEN(rc) ((rc) == 0 || (rc) == EOWNERDEAD)

#define NEED(fn) \
    if (UNLIKELY(!real.fn)) \
    resolve()

API int pthread_mutex_lock(pthread_mutex_t *m) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.mutex_lock(m);
    if (t && TAKEN(rc))
        on_acquire(t, m, RET_ADDR(), LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_mutex_trylock(pthread_mutex_t *m) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.mutex_trylock(m);
    if (t && TAKEN(rc))
        on_acquire(t, m, RET_ADDR(), LFT_MUTEX, LFT_OP_TRY, 0);
    return rc;
}

API int pthread_mutex_timedlock(pthread_mutex_t *m, const struct timespec *abstime) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.mutex_timedlock(m, abstime);
    if (t && TAKEN(rc))
        on_acquire(t, m, RET_ADDR(), LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_mutex_unlock(pthread_mutex_t *m) {
    NEED(mutex_lock);
    struct thr *t = enter();
    if (t)
        on_release(t, m, RET_ADDR(), LFT_MUTEX);
    return real.mutex_unlock(m);
}

API int pthread_rwlock_rdlock(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.rd(l);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 1);
    return rc;
}

API int pthread_rwlock_wrlock(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.wr(l);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_rwlock_tryrdlock(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.tryrd(l);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_TRY, 1);
    return rc;
}

API int pthread_rwlock_trywrlock(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.trywr(l);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_TRY, 0);
    return rc;
}

API int pthread_rwlock_timedrdlock(pthread_rwlock_t *l, const struct timespec *abstime) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.timedrd(l, abstime);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 1);
    return rc;
}

API int pthread_rwlock_timedwrlock(pthread_rwlock_t *l, const struct timespec *abstime) {
    NEED(mutex_lock);
    struct thr *t = enter();
    int rc = real.timedwr(l, abstime);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_rwlock_unlock(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    struct thr *t = enter();
    if (t)
        on_release(t, l, RET_ADDR(), LFT_RWLOCK);
    return real.rw_unlock(l);
}

/* pthread_cond_wait releases the mutex while it waits and takes it again before it returns
 * (also on a timeout): recorded as a release and an acquisition at the wait's call site. */
API int pthread_cond_wait(pthread_cond_t *c, pthread_mutex_t *m) {
    NEED(mutex_lock);
    struct thr *t = enter();
    const void *ret = RET_ADDR();
    if (t)
        on_release(t, m, ret, LFT_MUTEX);
    int rc = real.cond_wait(c, m);
    if (t)
        on_acquire(t, m, ret, LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *abstime) {
    NEED(mutex_lock);
    struct thr *t = enter();
    const void *ret = RET_ADDR();
    if (t)
        on_release(t, m, ret, LFT_MUTEX);
    int rc = real.cond_timedwait(c, m, abstime);
    if (t)
        on_acquire(t, m, ret, LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

/* The clockid_t variants (glibc 2.30; C++'s std::timed_mutex, std::condition_variable with
 * steady_clock use them) are the timed ones with another clock. */
API int pthread_mutex_clocklock(pthread_mutex_t *m, clockid_t clock, const struct timespec *abstime) {
    NEED(mutex_lock);
    if (!real.mutex_clocklock)
        return ENOSYS;
    struct thr *t = enter();
    int rc = real.mutex_clocklock(m, clock, abstime);
    if (t && TAKEN(rc))
        on_acquire(t, m, RET_ADDR(), LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_rwlock_clockrdlock(pthread_rwlock_t *l, clockid_t clock, const struct timespec *abstime) {
    NEED(mutex_lock);
    if (!real.clockrd)
        return ENOSYS;
    struct thr *t = enter();
    int rc = real.clockrd(l, clock, abstime);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 1);
    return rc;
}

API int pthread_rwlock_clockwrlock(pthread_rwlock_t *l, clockid_t clock, const struct timespec *abstime) {
    NEED(mutex_lock);
    if (!real.clockwr)
        return ENOSYS;
    struct thr *t = enter();
    int rc = real.clockwr(l, clock, abstime);
    if (t && rc == 0)
        on_acquire(t, l, RET_ADDR(), LFT_RWLOCK, LFT_OP_ACQUIRE, 0);
    return rc;
}

API int pthread_cond_clockwait(pthread_cond_t *c, pthread_mutex_t *m, clockid_t clock, const struct timespec *abstime) {
    NEED(mutex_lock);
    if (!real.cond_clockwait)
        return ENOSYS;
    struct thr *t = enter();
    const void *ret = RET_ADDR();
    if (t)
        on_release(t, m, ret, LFT_MUTEX);
    int rc = real.cond_clockwait(c, m, clock, abstime);
    if (t)
        on_acquire(t, m, ret, LFT_MUTEX, LFT_OP_ACQUIRE, 0);
    return rc;
}

/* An init site is the lock's class (lockdep's static key per init site); destroy forgets it. */
static void note_init(const void *lock, const void *ret, uint8_t type) {
    if (!hdr || tls_busy)
        return;
    tls_busy++;
    uint32_t cls = site_class(ret, class_by_site ? LFT_CLASS_SITE : LFT_CLASS_INIT, type);
    if (class_by_site) { /* decided at the first acquisition */
        struct cache_slot *s = cache_find(inst_cache, INST_CACHE, (uintptr_t)lock, 0);
        if (s)
            AST(&s->val, 0);
    } else {
        cache_put(inst_cache, INST_CACHE, (uintptr_t)lock, INST_VAL(cls, read_mode_of(lock, type)));
    }
    tls_busy--;
}

static void note_destroy(const void *lock) {
    if (!hdr)
        return;
    struct cache_slot *s = cache_find(inst_cache, INST_CACHE, (uintptr_t)lock, 0);
    if (s)
        AST(&s->val, 0);
}

API int pthread_mutex_init(pthread_mutex_t *m, const pthread_mutexattr_t *attr) {
    NEED(mutex_lock);
    int rc = real.mutex_init(m, attr);
    if (rc == 0)
        note_init(m, RET_ADDR(), LFT_MUTEX);
    return rc;
}

API int pthread_rwlock_init(pthread_rwlock_t *l, const pthread_rwlockattr_t *attr) {
    NEED(mutex_lock);
    int rc = real.rwlock_init(l, attr);
    if (rc == 0)
        note_init(l, RET_ADDR(), LFT_RWLOCK);
    return rc;
}

API int pthread_mutex_destroy(pthread_mutex_t *m) {
    NEED(mutex_lock);
    int rc = real.mutex_destroy(m);
    if (rc == 0)
        note_destroy(m);
    return rc;
}

API int pthread_rwlock_destroy(pthread_rwlock_t *l) {
    NEED(mutex_lock);
    int rc = real.rw_destroy(l);
    if (rc == 0)
        note_destroy(l);
    return rc;
}

/* -- attaching ---------------------------------------------------------------------------- */

/* In a forked child, the forking thread goes on in a ring of its own, holding what it held
 * (e.g. the locks a pthread_atfork prepare handler took, which the child's handler releases):
 * they are recorded again as taken by the child's thread. Other threads do not exist here. */
static void after_fork_child(void) {
    struct thr *t = tls_thr;
    if ((uintptr_t)t <= 1 || !hdr)
        return;
    tls_busy++;
    AADD(&hdr->processes, 1);
    __atomic_store_n(&modmap_lock, 0, __ATOMIC_RELEASE);
    struct lft_ring *r = claim_ring();
    tls_busy--;
    if (!r) {
        tls_thr = THR_DEAD;
        return;
    }
    thr_bind(t, r);
    for (uint32_t i = 0; i < t->nheld; i++) {
        struct held *h = &t->held[i];
        emit(t, h->inst, h->cls, h->site, h->op, h->mode);
    }
}

__attribute__((constructor)) static void attach(void) {
    resolve();
    const char *path = getenv("LOCKFLEET_TRACE_SHM");
    if (!path || !*path)
        return;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    struct lft_header probe;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof probe || pread(fd, &probe, sizeof probe, 0) != sizeof probe ||
        probe.magic != LFT_MAGIC || probe.version != LFT_VERSION || probe.total_size > (uint64_t)st.st_size) {
        close(fd);
        return;
    }
    void *base = mmap(NULL, probe.total_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED)
        return;
    size_t caches = sizeof(struct cache_slot) * (INST_CACHE + SITE_CACHE);
    void *c = mmap(NULL, caches, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED || pthread_key_create(&thr_key, thr_exit) != 0) {
        munmap(base, probe.total_size);
        return;
    }
    inst_cache = c;
    site_cache = inst_cache + INST_CACHE;
    ssize_t n = readlink("/proc/self/exe", exe_path, sizeof exe_path - 1);
    exe_path[n > 0 ? n : 0] = 0;
    shm = base;
    ring_mask = probe.ring_events - 1;
    precise = (probe.flags & LFT_FLAG_PRECISE) != 0;
    use_tsc = (probe.flags & LFT_FLAG_TSC) != 0;
    class_by_site = (probe.flags & LFT_FLAG_CLASS_BY_SITE) != 0;
    drop_full = (probe.flags & LFT_FLAG_DROP) != 0;
    pthread_atfork(NULL, NULL, after_fork_child);
    AST(&hdr, (struct lft_header *)base);
    AADD(&hdr->processes, 1);
}

/* -- the sidecar's side (called through ctypes by lockfleet.agent.native.preload) ----------------- */

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

API uint64_t lockfleet_trace_size(uint32_t rings, uint32_t ring_events, uint32_t modules, uint32_t classes,
                                  uint32_t sites) {
    uint64_t off = align_up(sizeof(struct lft_header), 4096);
    off += align_up((uint64_t)modules * sizeof(struct lft_module), 4096);
    off += align_up((uint64_t)classes * sizeof(struct lft_class), 4096);
    off += align_up((uint64_t)sites * sizeof(struct lft_site), 4096);
    uint64_t stride = align_up(sizeof(struct lft_ring) + (uint64_t)ring_events * sizeof(struct lft_event), 4096);
    return off + stride * rings;
}

/* Lay out fresh (zeroed) shared memory. Sizes must be powers of two. */
API int lockfleet_trace_init(void *base, uint32_t rings, uint32_t ring_events, uint32_t modules, uint32_t classes,
                             uint32_t sites, uint32_t flags) {
    struct lft_header *h = base;
    memset(h, 0, sizeof *h);
    h->magic = LFT_MAGIC;
    h->version = LFT_VERSION;
    h->flags = flags;
    h->rings = rings;
    h->ring_events = ring_events;
    h->modules = modules;
    h->classes = classes;
    h->sites = sites;
    uint64_t off = align_up(sizeof *h, 4096);
    h->module_off = off;
    off += align_up((uint64_t)modules * sizeof(struct lft_module), 4096);
    h->class_off = off;
    off += align_up((uint64_t)classes * sizeof(struct lft_class), 4096);
    h->site_off = off;
    off += align_up((uint64_t)sites * sizeof(struct lft_site), 4096);
    h->ring_off = off;
    h->ring_stride = align_up(sizeof(struct lft_ring) + (uint64_t)ring_events * sizeof(struct lft_event), 4096);
    h->total_size = off + h->ring_stride * rings;
    AST(&h->heartbeat_ns, mono_ns());
    AST(&h->clock_ns, realtime_ns());
    return 0;
}

/* The ticker: a thread of the sidecar that keeps header.clock_ns current. */
struct ticker {
    struct lft_header *hdr;
    uint32_t us;
    int run;
    pthread_t thread;
};

static void *tick(void *arg) {
    struct ticker *t = arg;
    struct timespec pause = {0, (long)t->us * 1000};
    while (ALD(&t->run)) {
        AST(&t->hdr->clock_ns, realtime_ns());
        nanosleep(&pause, NULL);
    }
    return NULL;
}

API void *lockfleet_trace_ticker(void *base, uint32_t interval_us) {
    struct ticker *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->hdr = base;
    t->us = interval_us ? interval_us : 1000;
    t->run = 1;
    if (pthread_create(&t->thread, NULL, tick, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

API void lockfleet_trace_ticker_stop(void *handle) {
    struct ticker *t = handle;
    if (!t)
        return;
    AST(&t->run, 0);
    pthread_join(t->thread, NULL);
    free(t);
}

/* Move up to `cap` events out of the rings into `out`, oldest first within each thread. Also
 * the sidecar's heartbeat. Rings are freed only by lockfleet_trace_reap, after the sidecar has
 * read who owned them. */
API uint64_t lockfleet_trace_drain(void *base, struct lft_out *out, uint64_t cap) {
    struct lft_header *h = base;
    AST(&h->heartbeat_ns, mono_ns());
    uint64_t n = 0, mask = h->ring_events - 1;
    for (uint32_t i = 0; i < h->rings && n < cap; i++) {
        struct lft_ring *r = (struct lft_ring *)((char *)base + h->ring_off + (uint64_t)i * h->ring_stride);
        uint32_t st = ALD(&r->state);
        if (st != LFT_RING_OWNED && st != LFT_RING_DONE)
            continue;
        uint64_t head = ALD(&r->head), tail = ARLX(&r->tail);
        uint64_t take = head - tail;
        if (take > cap - n)
            take = cap - n;
        for (uint64_t k = 0; k < take; k++) {
            const struct lft_event *e = &r->ev[(tail + k) & mask];
            struct lft_out *o = &out[n++];
            o->ts = (int64_t)e->ts;
            o->tid = r->tid;
            o->instance = e->instance;
            o->cls = e->cls;
            o->site = e->site;
            o->op = e->op;
            o->mode = e->mode;
            o->ring = i;
        }
        AST(&r->tail, tail + take);
    }
    return n;
}

/* Rings the sidecar may look at: fills idx/pid/state of every owned or finished ring. */
API uint32_t lockfleet_trace_owners(void *base, uint32_t *idx, uint32_t *pid, uint32_t *state, uint32_t cap) {
    struct lft_header *h = base;
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->rings && n < cap; i++) {
        struct lft_ring *r = (struct lft_ring *)((char *)base + h->ring_off + (uint64_t)i * h->ring_stride);
        uint32_t st = ALD(&r->state);
        if (st != LFT_RING_OWNED && st != LFT_RING_DONE)
            continue;
        idx[n] = i;
        pid[n] = r->pid;
        state[n] = st;
        n++;
    }
    return n;
}

/* A ring's owner: returns its state; fills pid, tid, comm (16 bytes), dropped events. */
API uint32_t lockfleet_trace_ring(void *base, uint32_t i, uint32_t *pid, uint32_t *tid, char *comm,
                                  uint64_t *dropped) {
    struct lft_header *h = base;
    struct lft_ring *r = (struct lft_ring *)((char *)base + h->ring_off + (uint64_t)i * h->ring_stride);
    uint32_t st = ALD(&r->state);
    *pid = r->pid;
    *tid = r->tid;
    memcpy(comm, r->comm, 16);
    *dropped = ALD(&r->dropped);
    return st;
}

/* Free a drained ring (its thread exited, or its process is gone); 0 when events remain. */
API int lockfleet_trace_reap(void *base, uint32_t i) {
    struct lft_header *h = base;
    struct lft_ring *r = (struct lft_ring *)((char *)base + h->ring_off + (uint64_t)i * h->ring_stride);
    if (ALD(&r->head) != ARLX(&r->tail))
        return 0;
    AST(&r->state, LFT_RING_FREE);
    return 1;
}

/* A class: returns 1 when it exists, with its kind, lock type, module id and offset. */
API int lockfleet_trace_class(void *base, uint32_t id, uint32_t *kind, uint32_t *type, uint32_t *module,
                              uint64_t *offset) {
    struct lft_header *h = base;
    if (id == 0 || id >= h->classes)
        return 0;
    struct lft_class *c = (struct lft_class *)((char *)base + h->class_off) + id;
    if (ALD(&c->state) != LFT_SLOT_READY)
        return 0;
    *kind = c->kind;
    *type = c->type;
    *module = c->module;
    *offset = c->offset;
    return 1;
}

API int lockfleet_trace_site(void *base, uint32_t id, uint32_t *module, uint64_t *offset) {
    struct lft_header *h = base;
    if (id == 0 || id >= h->sites)
        return 0;
    struct lft_site *s = (struct lft_site *)((char *)base + h->site_off) + id;
    if (ALD(&s->state) != LFT_SLOT_READY)
        return 0;
    *module = s->module;
    *offset = s->offset;
    return 1;
}

API const char *lockfleet_trace_module(void *base, uint32_t id) {
    struct lft_header *h = base;
    if (id == 0 || id >= h->modules)
        return NULL;
    struct lft_module *m = (struct lft_module *)((char *)base + h->module_off) + id;
    return ALD(&m->state) == LFT_SLOT_READY ? m->path : NULL;
}

/* Counters: processes, untraced threads, table overflows, events dropped on full rings. */
API void lockfleet_trace_counters(void *base, uint64_t *out) {
    struct lft_header *h = base;
    out[0] = ALD(&h->processes);
    out[1] = ALD(&h->untraced_threads);
    out[2] = ALD(&h->table_full);
    out[3] = 0;
    for (uint32_t i = 0; i < h->rings; i++) {
        struct lft_ring *r = (struct lft_ring *)((char *)base + h->ring_off + (uint64_t)i * h->ring_stride);
        out[3] += ALD(&r->dropped);
    }
}

/* A (TSC, CLOCK_REALTIME ns) pair taken back to back, for converting event times. */
API void lockfleet_trace_clock(uint64_t *tsc, uint64_t *ns) {
    struct timespec ts;
#if defined(__x86_64__) || defined(__i386__)
    *tsc = __rdtsc();
#else
    *tsc = 0;
#endif
    clock_gettime(CLOCK_REALTIME, &ts);
    *ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
