# Counted allocation for the core: every block the core (and its hash tables) allocates goes
# through these, so that a test can check that a Core frees what it allocated (live_blocks()
# returns to where it was once the Cores are gone). The count is atomic: Cores may run in
# several threads without the GIL.

cdef extern from *:
    """
    #include <stdlib.h>
    static long long lf_live_blocks = 0;
    static void* lf_malloc(size_t n) {
        void* p = malloc(n);
        if (p) __atomic_fetch_add(&lf_live_blocks, 1, __ATOMIC_RELAXED);
        return p;
    }
    static void* lf_calloc(size_t n, size_t m) {
        void* p = calloc(n, m);
        if (p) __atomic_fetch_add(&lf_live_blocks, 1, __ATOMIC_RELAXED);
        return p;
    }
    static void* lf_realloc(void* p, size_t n) {
        void* q = realloc(p, n);
        if (q && !p) __atomic_fetch_add(&lf_live_blocks, 1, __ATOMIC_RELAXED);
        return q;
    }
    static void lf_free(void* p) {
        if (p) {
            __atomic_fetch_sub(&lf_live_blocks, 1, __ATOMIC_RELAXED);
            free(p);
        }
    }
    static long long lf_live(void) { return __atomic_load_n(&lf_live_blocks, __ATOMIC_RELAXED); }
    """
    void* lf_malloc(size_t n) nogil
    void* lf_calloc(size_t n, size_t m) nogil
    void* lf_realloc(void* p, size_t n) nogil
    void lf_free(void* p) nogil
    long long lf_live() nogil
