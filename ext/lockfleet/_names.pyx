# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Interning of names (lock classes, sites, tasks, hosts) straight from Arrow string buffers.

A batch's string column arrives dictionary-encoded; its dictionary is read here as raw utf8 bytes
(offsets + data buffers) and each entry mapped to a dense int32 id in one pass, with no Python
string made per entry. Python strings are made only when a name is printed.

Invariants: ids are dense, 0.. n-1, in first-seen order, never reused; the bytes of name i are
arena[offs[i]:offs[i+1]]; the open-addressing table holds ids (-1 empty) and stays at most half
full, keyed by FNV-1a of the bytes (hashes kept per id so that growing never rehashes bytes).
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset

import numpy as np
import pyarrow as pa


cdef inline uint64_t _fnv1a(const uint8_t* p, int64_t n) noexcept nogil:
    cdef uint64_t h = 0xcbf29ce484222325
    cdef int64_t i
    for i in range(n):
        h = (h ^ p[i]) * <uint64_t>0x100000001b3
    return h


cdef class Names:
    cdef uint8_t* arena
    cdef int64_t arena_len, arena_cap
    cdef int64_t* offs
    cdef uint64_t* hashes
    cdef int32_t n, cap
    cdef int32_t* slots
    cdef int64_t mask

    def __cinit__(self):
        self.cap = 0
        self.n = 0
        self.mask = 1023
        self.slots = <int32_t*>malloc(1024 * 4)
        memset(self.slots, 0xff, 1024 * 4)
        self.offs = <int64_t*>malloc(8)
        self.offs[0] = 0

    def __dealloc__(self):
        free(self.arena)
        free(self.offs)
        free(self.hashes)
        free(self.slots)

    def __len__(self):
        return self.n

    cdef int _grow_table(self) noexcept nogil:
        cdef int64_t c = (self.mask + 1) * 2, i, j
        cdef int32_t* slots = <int32_t*>malloc(c * 4)
        if slots == NULL:
            return -1
        memset(slots, 0xff, c * 4)
        for i in range(self.n):
            j = <int64_t>(self.hashes[i] & <uint64_t>(c - 1))
            while slots[j] >= 0:
                j = (j + 1) & (c - 1)
            slots[j] = <int32_t>i
        free(self.slots)
        self.slots = slots
        self.mask = c - 1
        return 0

    cdef int32_t _intern(self, const uint8_t* p, int64_t length) noexcept nogil:
        """Id of the bytes p[:length], adding them if new; -1 when out of memory."""
        cdef uint64_t h = _fnv1a(p, length)
        cdef int64_t i = <int64_t>(h & <uint64_t>self.mask), c
        cdef int32_t r
        cdef void* q
        while True:
            r = self.slots[i]
            if r < 0:
                break
            if (self.hashes[r] == h and self.offs[r + 1] - self.offs[r] == length
                    and memcmp(&self.arena[self.offs[r]], p, length) == 0):
                return r
            i = (i + 1) & self.mask
        if self.n + 1 > self.cap:
            c = max(<int64_t>self.cap * 2, 256)
            q = realloc(self.offs, (c + 1) * 8)
            if q == NULL:
                return -1
            self.offs = <int64_t*>q
            q = realloc(self.hashes, c * 8)
            if q == NULL:
                return -1
            self.hashes = <uint64_t*>q
            self.cap = <int32_t>c
        if self.arena_len + length > self.arena_cap:
            c = max(self.arena_cap * 2, self.arena_len + length, 4096)
            q = realloc(self.arena, c)
            if q == NULL:
                return -1
            self.arena = <uint8_t*>q
            self.arena_cap = c
        r = self.n
        if length:
            memcpy(&self.arena[self.arena_len], p, length)
        self.arena_len += length
        self.offs[r + 1] = self.arena_len
        self.hashes[r] = h
        self.slots[i] = r
        self.n += 1
        if (<int64_t>self.n) * 2 > self.mask + 1:
            if self._grow_table():
                return -1
        return r

    cdef int32_t _find(self, const uint8_t* p, int64_t length) noexcept nogil:
        cdef uint64_t h = _fnv1a(p, length)
        cdef int64_t i = <int64_t>(h & <uint64_t>self.mask)
        cdef int32_t r
        while True:
            r = self.slots[i]
            if r < 0:
                return -1
            if (self.hashes[r] == h and self.offs[r + 1] - self.offs[r] == length
                    and memcmp(&self.arena[self.offs[r]], p, length) == 0):
                return r
            i = (i + 1) & self.mask

    def get(self, str s):
        """Id of s, added if new."""
        cdef bytes b = s.encode("utf-8", "surrogatepass")
        cdef int32_t r = self._intern(<const uint8_t*><char*>b, len(b))
        if r < 0:
            raise MemoryError()
        return r

    def find(self, str s):
        """Id of s, or -1."""
        cdef bytes b = s.encode("utf-8", "surrogatepass")
        return self._find(<const uint8_t*><char*>b, len(b))

    def name(self, int32_t i):
        if i < 0 or i >= self.n:
            return ""
        return (<char*>self.arena)[self.offs[i]:self.offs[i + 1]].decode("utf-8", "replace")

    def names(self):
        return [self.name(i) for i in range(self.n)]

    def map(self, values):
        """Ids of a list of Python strings."""
        return np.fromiter((self.get(v) for v in values), dtype=np.int32, count=len(values))

    def map_array(self, arr):
        """Ids of every entry of a utf8 / large_utf8 Arrow array (a dictionary); a null entry
        maps to the empty name's id."""
        cdef int64_t n = len(arr), i, start, end, base = arr.offset
        out = np.empty(n, dtype=np.int32)
        cdef int32_t[::1] vo = out
        cdef const uint8_t[::1] data
        cdef const int32_t[::1] off32
        cdef const int64_t[::1] off64
        cdef const uint8_t* pdata
        cdef bint large = pa.types.is_large_string(arr.type)
        cdef int32_t r
        if n == 0:
            return out
        bufs = arr.buffers()
        if bufs[2] is not None and bufs[2].size:
            data = np.frombuffer(bufs[2], dtype=np.uint8)
            pdata = &data[0]
        else:
            pdata = <const uint8_t*>b""
        # exactly the offsets used: Arrow IPC lets a buffer run past them (by any number of bytes)
        if large:
            off64 = np.frombuffer(bufs[1], dtype=np.int64, count=base + n + 1)
        else:
            off32 = np.frombuffer(bufs[1], dtype=np.int32, count=base + n + 1)
        with nogil:
            for i in range(n):
                if large:
                    start = off64[base + i]
                    end = off64[base + i + 1]
                else:
                    start = off32[base + i]
                    end = off32[base + i + 1]
                r = self._intern(pdata + start, end - start)
                if r < 0:
                    break
                vo[i] = r
        if r < 0:
            raise MemoryError()
        if arr.null_count:
            out[np.asarray(arr.is_null())] = self.get("")
        return out
