# Open-addressing hash map from a nonzero 64-bit key to an int32 value, for the core's hot path.
#
# Invariants: capacity is a power of two; key 0 marks an empty slot (callers make keys nonzero by
# setting bit 63 or OR-ing 1 into a hash); the load factor stays at or below 1/2 so that a linear
# probe ends within a few slots; entries are never deleted (classes, edges and chains only grow,
# as lockdep's tables do), which keeps probing free of tombstones.
# All functions are nogil and touch no Python object.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from alloc cimport lf_calloc as calloc, lf_free as free, lf_malloc as malloc
from libc.string cimport memset


cdef inline uint64_t mix64(uint64_t x) noexcept nogil:
    # splitmix64's finaliser: every input bit affects every output bit, so keys built from small
    # ids (class << 32 | class) spread over the table.
    x ^= x >> 30
    x *= <uint64_t>0xbf58476d1ce4e5b9
    x ^= x >> 27
    x *= <uint64_t>0x94d049bb133111eb
    x ^= x >> 31
    return x


cdef struct U64Map:
    uint64_t* keys
    int32_t* vals
    int64_t mask
    int64_t size


cdef inline int u64map_init(U64Map* m, int64_t cap) noexcept nogil:
    cdef int64_t c = 16
    while c < cap:
        c <<= 1
    m.keys = <uint64_t*>calloc(c, sizeof(uint64_t))
    m.vals = <int32_t*>calloc(c, sizeof(int32_t))
    m.mask = c - 1
    m.size = 0
    return 0 if (m.keys != NULL and m.vals != NULL) else -1


cdef inline void u64map_free(U64Map* m) noexcept nogil:
    free(m.keys)
    free(m.vals)
    m.keys = NULL
    m.vals = NULL


cdef inline int32_t u64map_get_h(const U64Map* m, uint64_t key, uint64_t h) noexcept nogil:
    """Value for `key` (whose hash is h), or -1."""
    cdef int64_t i = <int64_t>(h & <uint64_t>m.mask)
    cdef uint64_t k
    while True:
        k = m.keys[i]
        if k == key:
            return m.vals[i]
        if k == 0:
            return -1
        i = (i + 1) & m.mask


cdef inline int32_t u64map_get(const U64Map* m, uint64_t key) noexcept nogil:
    return u64map_get_h(m, key, mix64(key))


cdef inline int _u64map_grow(U64Map* m, bint prehashed) noexcept nogil:
    cdef int64_t old_cap = m.mask + 1, i, j, new_mask = (m.mask + 1) * 2 - 1
    cdef uint64_t* keys = <uint64_t*>calloc(new_mask + 1, sizeof(uint64_t))
    cdef int32_t* vals = <int32_t*>calloc(new_mask + 1, sizeof(int32_t))
    cdef uint64_t k
    if keys == NULL or vals == NULL:
        free(keys)
        free(vals)
        return -1
    for i in range(old_cap):
        k = m.keys[i]
        if k != 0:
            j = <int64_t>((k if prehashed else mix64(k)) & <uint64_t>new_mask)
            while keys[j] != 0:
                j = (j + 1) & new_mask
            keys[j] = k
            vals[j] = m.vals[i]
    free(m.keys)
    free(m.vals)
    m.keys = keys
    m.vals = vals
    m.mask = new_mask
    return 0


cdef inline int u64map_put_h(U64Map* m, uint64_t key, uint64_t h, int32_t val, bint prehashed) noexcept nogil:
    """Insert a key known to be absent. `prehashed`: the key is its own hash (h == key)."""
    cdef int64_t i
    if (m.size + 1) * 2 > m.mask + 1:
        if _u64map_grow(m, prehashed) != 0:
            return -1
    i = <int64_t>(h & <uint64_t>m.mask)
    while m.keys[i] != 0:
        i = (i + 1) & m.mask
    m.keys[i] = key
    m.vals[i] = val
    m.size += 1
    return 0


cdef inline int u64map_put(U64Map* m, uint64_t key, int32_t val) noexcept nogil:
    return u64map_put_h(m, key, mix64(key), val, False)


# An index over rows of the caller's two int32 columns (a[i], b[i]): slots hold only row ids
# (4 bytes, -1 empty), and a probe compares against the columns themselves. A third of the
# memory of a key/value map, for tables probed off the hot path (the edge table: a repeated
# dependency never gets here, its chain is cached). With 4-byte slots it may fill to 3/4:
# sixteen slots share a cache line, so the longer probes stay cheap.

cdef struct PairIndex:
    int32_t* slots
    int64_t mask
    int64_t size


cdef inline uint64_t _pair_hash(int32_t a, int32_t b) noexcept nogil:
    return mix64(((<uint64_t><uint32_t>a) << 32) | <uint64_t><uint32_t>b)


cdef inline int pairidx_init(PairIndex* t, int64_t cap) noexcept nogil:
    cdef int64_t c = 16
    while c < cap:
        c <<= 1
    t.slots = <int32_t*>malloc(c * sizeof(int32_t))
    if t.slots == NULL:
        return -1
    memset(t.slots, 0xff, c * sizeof(int32_t))
    t.mask = c - 1
    t.size = 0
    return 0


cdef inline int32_t pairidx_find(const PairIndex* t, const int32_t* a, const int32_t* b,
                                 int32_t x, int32_t y) noexcept nogil:
    cdef int64_t i = <int64_t>(_pair_hash(x, y) & <uint64_t>t.mask)
    cdef int32_t r
    while True:
        r = t.slots[i]
        if r < 0:
            return -1
        if a[r] == x and b[r] == y:
            return r
        i = (i + 1) & t.mask


cdef inline int pairidx_add(PairIndex* t, const int32_t* a, const int32_t* b, int32_t row) noexcept nogil:
    """Index a row whose pair is known to be absent."""
    cdef int64_t i, j, c, new_mask
    cdef int32_t* slots
    cdef int32_t r
    if (t.size + 1) * 4 > (t.mask + 1) * 3:
        c = (t.mask + 1) * 2
        new_mask = c - 1
        slots = <int32_t*>malloc(c * sizeof(int32_t))
        if slots == NULL:
            return -1
        memset(slots, 0xff, c * sizeof(int32_t))
        for i in range(t.mask + 1):
            r = t.slots[i]
            if r >= 0:
                j = <int64_t>(_pair_hash(a[r], b[r]) & <uint64_t>new_mask)
                while slots[j] >= 0:
                    j = (j + 1) & new_mask
                slots[j] = r
        free(t.slots)
        t.slots = slots
        t.mask = new_mask
    i = <int64_t>(_pair_hash(a[row], b[row]) & <uint64_t>t.mask)
    while t.slots[i] >= 0:
        i = (i + 1) & t.mask
    t.slots[i] = row
    t.size += 1
    return 0
