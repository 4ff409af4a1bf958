# Open-addressing hash map from a nonzero 64-bit key to an int32 value, for the core's hot path.
#
# Invariants: capacity is a power of two; key 0 marks an empty slot (callers make keys nonzero by
# setting bit 63 or OR-ing 1 into a hash); the load factor stays at or below 1/2 so that a linear
# probe ends within a few slots; entries are never deleted (classes, edges and chains only grow,
# as lockdep's tables do), which keeps probing free of tombstones.
# All functions are nogil and touch no Python object.

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free


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
