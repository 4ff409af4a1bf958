# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The lockdep core: held-lock stacks, dependencies, the class graph and its cycle search.

Per event (lockdep's __lock_acquire / __lock_release), all in C over the batch's columns:
  - The thread's held stack lives in flat arrays (max_depth slots per thread). Each slot keeps the
    chain key of the stack up to it, so a push costs one hash and a pop none (lockdep's chain_key).
  - A chain key already seen (a hash of host, held classes with their modes, trylock and irq
    flags, and the new lock) means the same checks on the same stack: one probe, a counter bump,
    done (lockdep's lookup_chain_cache). Only a new chain is validated: usage bits
    (mark_usage), recursion (check_deadlock), and dependencies from the top held lock down through
    trylocks (check_prevs_add) into an open-addressing table of edges.
  - A new dependency, or a new kind on a known one, is an *arrival*, numbered in row order.

Per batch, the arrivals reach the graph (graph.pxi): the strongly connected components carry
levels that every edge between components climbs (longest-path depths, the pseudo-topological
levels of Bender, Fineman, Gilbert & Tarjan 2016). An arrival that climbs needs no search; one
that does not lifts its target and the region above it; one that closes a cycle in the plain
graph, or a batch with many disagreeing arrivals, triggers a linear-time recomputation of the
components (Tarjan) instead, the cheaper way to absorb a large batch. Only arrivals inside a
component can close a cycle, and only a strong one is a deadlock: a breadth-first search over
(class, does the path end in a recursive read) states, limited to the component and to the kinds
that had arrived by then, finds it, and a bounded exhaustive search keeps the reported cycle simple when the state path repeats a class.
irq usage reachability (safe ~> unsafe) is propagated over the same states and only grows.

Invariants: classes, edges, chains, occurrences only grow (ids are dense int32 and never reused);
every edge's endpoints are in different classes; for components A != B with an edge A -> B,
lvl[A] < lvl[B] holds between batches; reach bits and usage bits only grow.
No Python object is touched inside the row loop or the graph algorithms (all nogil).

Storage (_core.pxd): every array is declared once with what it holds and registered once in
`_declare()`'s array table (family, element size, saved or derived); growth (`_grow_family`),
release (`__dealloc__`), snapshots (`dump`/`load`) and `memory_breakdown` all read that table, and
every block goes through the counted allocator of alloc.pxd (`live_blocks()`, checked by
tests/test_core_memory.py). `check_invariants()` (graph.pxi) states the order's invariants; the
property tests call it after every batch.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport qsort
from alloc cimport lf_malloc as malloc, lf_calloc as calloc, lf_realloc as realloc, lf_free as free, lf_live
from libc.string cimport memset, memcpy
from libc.math cimport log

import numpy as np
cimport numpy as cnp

from hashmap cimport (U64Map, mix64, u64map_init, u64map_free, u64map_get, u64map_get_h,
                      u64map_put, u64map_put_h, PairIndex, pairidx_init, pairidx_find, pairidx_add)

cnp.import_array()

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

cdef uint64_t TOP = (<uint64_t>1) << 63


_SNAP_MAGIC = b"LFCORE06"
_SNAP_HEADER = 32

# memory_breakdown's groups, and the group of each Family
_MEMORY_GROUPS = ("classes", "adjacency", "inversions", "threads", "occurrences", "edges", "edge_hosts",
                  "chains", "batch", "scratch", "host_sketches")
_FAMILY_GROUP = {FAM_CLS: 0, FAM_WORDS: 2, FAM_THR: 3, FAM_OCC: 4, FAM_EDGE: 5, FAM_EI: 5, FAM_PAIR: 6,
                 FAM_INV: 2, FAM_CHAIN: 7, FAM_CE: 7, FAM_AR: 8, FAM_UC: 8, FAM_F: 8, FAM_FH: 8, FAM_FP: 8,
                 FAM_SCRATCH: 9, FAM_PATH: 9, FAM_WL: 9, FAM_DEPTH: 9, FAM_SK: 10}


cdef inline uint32_t _seconds(int64_t ts_ns) noexcept nogil:
    if ts_ns <= 0:
        return 0
    return <uint32_t>(ts_ns // 1000000000)


cdef inline void _hll_add(uint8_t* reg, int32_t host) noexcept nogil:
    # HyperLogLog: the low HLL_BITS of the host's hash pick a register, which keeps the longest
    # run of trailing zeros (plus one) seen in the rest of the hash
    cdef uint64_t h = mix64(<uint64_t><uint32_t>host ^ <uint64_t>0x6a09e667f3bcc909)
    cdef uint64_t w = h >> HLL_BITS
    cdef uint8_t rho = <uint8_t>(__builtin_ctzll(w) + 1) if w else <uint8_t>(64 - HLL_BITS + 1)
    cdef int64_t i = <int64_t>(h & (HLL_M - 1))
    if reg[i] < rho:
        reg[i] = rho


cdef double _hll_estimate(const uint8_t* reg) noexcept nogil:
    # Flajolet et al.'s estimate, with linear counting while registers are still empty
    cdef double z = 0.0, m = <double><int>HLL_M, e
    cdef int64_t i, zeros = 0
    for i in range(HLL_M):
        z += 1.0 / <double>((<uint64_t>1) << reg[i])
        if reg[i] == 0:
            zeros += 1
    e = (0.7213 / (1.0 + 1.079 / m)) * m * m / z
    if e <= 2.5 * m and zeros > 0:
        e = m * log(m / <double>zeros)
    return e


def live_blocks():
    """Blocks the core's allocator has handed out and not yet had back, over every Core in this
    process (alloc.pxd): the tests check that a Core's life ends where it began."""
    return lf_live()


cdef int _grow(void** p, int64_t n, size_t elem) noexcept nogil:
    cdef void* q = realloc(p[0], n * elem)
    if q == NULL:
        return -1
    p[0] = q
    return 0


@cython.final
cdef class Core:
    """One fleet's lock state. Methods named without an underscore are the Python surface;
    everything else runs without the GIL."""

    def __cinit__(self, int max_depth=48, int64_t max_chains=MAX_CHAINS_DEFAULT, int exact_hosts=HOST_EXACT):
        if max_depth < 1 or max_depth > 1024:
            raise ValueError("max_lock_depth must be between 1 and 1024")
        if max_chains < 16:
            raise ValueError("max_chains must be at least 16")
        if exact_hosts < 1:
            raise ValueError("exact_hosts must be at least 1")
        self.max_depth = max_depth
        self.max_chains = max_chains
        self.exact_hosts = exact_hosts
        self.thr_sweep_at = THREAD_SWEEP_MIN
        self._declare()
        if (u64map_init(&self.cls_map, 1024) or u64map_init(&self.thr_map, 1024)
                or pairidx_init(&self.edge_idx, 1024)
                or u64map_init(&self.inst_map, 256) or u64map_init(&self.inv_map, 64)
                or self._grow_family(FAM_DEPTH, max_depth) or self._grow_family(FAM_SK, 1)):
            raise MemoryError()
        self.chain_slots = <int32_t*>malloc(4096 * sizeof(int32_t))
        if self.chain_slots == NULL:
            raise MemoryError()
        memset(self.chain_slots, 0xff, 4096 * sizeof(int32_t))
        self.chain_mask = 4095
        self.gen = 1
        memset(self.tc_th, 0xff, sizeof(self.tc_th))

    def __dealloc__(self):
        cdef int i
        self._free_indexes()
        for i in range(self.n_arrays):
            free(self.arrays[i].ptr[0])
            self.arrays[i].ptr[0] = NULL

    # ------------------------------------------------------------------ the array table

    cdef void _declare(self) noexcept:
        """Every array of the core, once: its family, element size, whether snapshots carry it
        (in this order: the snapshot layout) and whether grown elements start zeroed. Reach words
        are added by _new_word as inversions need them."""
        cdef int f
        for f in range(N_FAMILIES):
            self.fam_n[f] = NULL
            self.fam_cap[f] = NULL
        self.fam_n[FAM_CLS] = &self.n_cls;         self.fam_cap[FAM_CLS] = &self.cap_cls
        self.fam_n[FAM_WORDS] = &self.n_cls;       self.fam_cap[FAM_WORDS] = &self.cap_cls
        self.fam_n[FAM_THR] = &self.n_thr;         self.fam_cap[FAM_THR] = &self.cap_thr
        self.fam_n[FAM_OCC] = &self.n_occ;         self.fam_cap[FAM_OCC] = &self.cap_occ
        self.fam_n[FAM_EDGE] = &self.n_edge;       self.fam_cap[FAM_EDGE] = &self.cap_edge
        self.fam_n[FAM_EI] = &self.n_ei;           self.fam_cap[FAM_EI] = &self.cap_ei
        self.fam_n[FAM_PAIR] = &self.n_pair;       self.fam_cap[FAM_PAIR] = &self.cap_pair
        self.fam_n[FAM_INV] = &self.n_inv;         self.fam_cap[FAM_INV] = &self.cap_inv
        self.fam_n[FAM_CHAIN] = &self.n_chain;     self.fam_cap[FAM_CHAIN] = &self.cap_chain
        self.fam_n[FAM_CE] = &self.n_ce;           self.fam_cap[FAM_CE] = &self.cap_ce
        self.fam_n[FAM_AR] = &self.n_ar;           self.fam_cap[FAM_AR] = &self.cap_ar
        self.fam_n[FAM_UC] = &self.n_uc;           self.fam_cap[FAM_UC] = &self.cap_uc
        self.fam_n[FAM_F] = &self.n_f;             self.fam_cap[FAM_F] = &self.cap_f
        self.fam_n[FAM_FH] = &self.n_fh;           self.fam_cap[FAM_FH] = &self.cap_fh
        self.fam_n[FAM_FP] = &self.n_fp;           self.fam_cap[FAM_FP] = &self.cap_fp
        self.fam_n[FAM_SCRATCH] = &self.cap_scratch; self.fam_cap[FAM_SCRATCH] = &self.cap_scratch
        self.fam_n[FAM_PATH] = &self.path_n;       self.fam_cap[FAM_PATH] = &self.cap_path
        self.fam_n[FAM_WL] = &self.n_wl;           self.fam_cap[FAM_WL] = &self.cap_wl
        self.fam_n[FAM_DEPTH] = &self.depth_n;     self.fam_cap[FAM_DEPTH] = &self.depth_n
        self.fam_n[FAM_SK] = &self.n_sk;           self.fam_cap[FAM_SK] = &self.cap_sk
        self.n_arrays = 0
        # classes
        self._add_array(<void**>&self.cls_name, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.cls_sub, 1, FAM_CLS, True, False)
        self._add_array(<void**>&self.cls_usage, 1, FAM_CLS, True, False)
        self._add_array(<void**>&self.cls_flags, 1, FAM_CLS, True, False)
        self._add_array(<void**>&self.cls_reach, 1, FAM_CLS, True, False)
        self._add_array(<void**>&self.cls_usage_occ, 32, FAM_CLS, True, False)
        self._add_array(<void**>&self.rep, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.lvl, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.mnext, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.in0_n, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.out0_n, 4, FAM_CLS, True, False)
        self._add_array(<void**>&self.out_e, sizeof(int32_t*), FAM_CLS, False, True)
        self._add_array(<void**>&self.out_n, 4, FAM_CLS, False, True)
        self._add_array(<void**>&self.out_c, 4, FAM_CLS, False, True)
        self._add_array(<void**>&self.in_e, sizeof(int32_t*), FAM_CLS, False, True)
        self._add_array(<void**>&self.in_n, 4, FAM_CLS, False, True)
        self._add_array(<void**>&self.in_c, 4, FAM_CLS, False, True)
        self._add_array(<void**>&self.mark_a, 4, FAM_CLS, False, True)
        self._add_array(<void**>&self.mark_b, 4, FAM_CLS, False, True)
        # threads (a thread's element is its whole held stack)
        self._add_array(<void**>&self.thr_host, 4, FAM_THR, True, False)
        self._add_array(<void**>&self.thr_tid, 8, FAM_THR, True, False)
        self._add_array(<void**>&self.thr_depth, 4, FAM_THR, True, False)
        self._add_array(<void**>&self.thr_over, 4, FAM_THR, True, False)
        self._add_array(<void**>&self.thr_seed, 8, FAM_THR, True, False)
        self._add_array(<void**>&self.st, sizeof(Held) * self.max_depth, FAM_THR, True, False)
        # occurrences
        self._add_array(<void**>&self.oc_cls, 4, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_site, 4, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_host, 4, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_task, 4, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_tid, 8, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_ts, 8, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_inst, 8, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_mode, 1, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_try, 1, FAM_OCC, True, False)
        self._add_array(<void**>&self.oc_irq, 1, FAM_OCC, True, False)
        # dependencies, their instances, their hosts
        self._add_array(<void**>&self.e_src, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_dst, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_kinds, 1, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_flags, 1, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_bkinds, 1, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_bfirst, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ev_task, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ev_ts, 8, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ev_site_h, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ev_site_t, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ei_edge, 4, FAM_EI, True, False)
        self._add_array(<void**>&self.ei_h, 8, FAM_EI, True, False)
        self._add_array(<void**>&self.ei_t, 8, FAM_EI, True, False)
        self._add_array(<void**>&self.ev_modes, 1, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_hosts, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_host0, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_count, 8, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_last, 8, FAM_EDGE, True, False)
        self._add_array(<void**>&self.ph_host, 4, FAM_PAIR, True, False)
        self._add_array(<void**>&self.ph_next, 4, FAM_PAIR, True, False)
        self._add_array(<void**>&self.e_base, 8, FAM_EDGE, True, False)
        self._add_array(<void**>&self.e_sketch, 4, FAM_EDGE, True, False)
        self._add_array(<void**>&self.sk_reg, HLL_M, FAM_SK, True, False)
        # chains
        self._add_array(<void**>&self.chains, sizeof(Chain), FAM_CHAIN, True, False)
        self._add_array(<void**>&self.ce_edge, 4, FAM_CE, True, False)
        # inversions
        self._add_array(<void**>&self.inv_edge, 4, FAM_INV, True, False)
        self._add_array(<void**>&self.inv_wit, 8, FAM_INV, True, False)
        self._add_array(<void**>&self.inv_kept, 4, FAM_INV, True, False)
        # per batch
        self._add_array(<void**>&self.ar_edge, 4, FAM_AR, False, False)
        self._add_array(<void**>&self.ar_kind, 1, FAM_AR, False, False)
        self._add_array(<void**>&self.ar_new, 1, FAM_AR, False, False)
        self._add_array(<void**>&self.ar_seq, 4, FAM_AR, False, False)
        self._add_array(<void**>&self.ar_next, 4, FAM_AR, False, False)
        self._add_array(<void**>&self.ar_row, 4, FAM_AR, False, False)
        self._add_array(<void**>&self.uc_cls, 4, FAM_UC, False, False)
        self._add_array(<void**>&self.f_kind, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_row, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_a, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_b, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_c, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_d, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_occ, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_hoff, 8, FAM_F, False, False)
        self._add_array(<void**>&self.f_hn, 4, FAM_F, False, False)
        self._add_array(<void**>&self.f_poff, 8, FAM_F, False, False)
        self._add_array(<void**>&self.f_pn, 4, FAM_F, False, False)
        self._add_array(<void**>&self.fh, 4, FAM_FH, False, False)
        self._add_array(<void**>&self.fp, 4, FAM_FP, False, False)
        # search scratch
        self._add_array(<void**>&self.vis, 4, FAM_SCRATCH, False, True)
        self._add_array(<void**>&self.par_e, 4, FAM_SCRATCH, False, False)
        self._add_array(<void**>&self.par_s, 1, FAM_SCRATCH, False, False)
        self._add_array(<void**>&self.queue, 4, FAM_SCRATCH, False, False)
        self._add_array(<void**>&self.path, 4, FAM_PATH, False, False)
        self._add_array(<void**>&self.wl, 4, FAM_WL, False, False)
        # re-acquisition scratch
        self._add_array(<void**>&self.ra_cls, 4, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_name, 4, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_site, 4, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_task, 4, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_inst, 8, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_ts, 8, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_mode, 1, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_try, 1, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_irq, 1, FAM_DEPTH, False, False)
        self._add_array(<void**>&self.ra_edges, 4, FAM_DEPTH, False, False)

    cdef void _add_array(self, void** ptr, size_t elem, int fam, bint snap, bint zero) noexcept nogil:
        # MAX_ARRAYS leaves room for every declared array and 2 * MAX_WORDS reach words
        ptr[0] = NULL
        self.arrays[self.n_arrays].ptr = ptr
        self.arrays[self.n_arrays].elem = elem
        self.arrays[self.n_arrays].fam = fam
        self.arrays[self.n_arrays].snap = snap
        self.arrays[self.n_arrays].zero = zero
        self.n_arrays += 1

    cdef int _grow_family(self, int fam, int64_t cap) noexcept nogil:
        """Resize every array of family `fam` (with FAM_CLS, the reach words too) to `cap`
        elements, zeroing the new ones where the table says so; sets the family's capacity."""
        cdef int64_t old = self.fam_cap[fam][0]
        cdef int i
        cdef void* q
        cdef Array* a
        for i in range(self.n_arrays):
            a = &self.arrays[i]
            if a.fam != fam and not (fam == FAM_CLS and a.fam == FAM_WORDS):
                continue
            q = realloc(a.ptr[0], max(cap, 1) * a.elem)
            if q == NULL:
                self.oom = True
                return -1
            a.ptr[0] = q
            if a.zero and cap > old:
                memset(<char*>q + old * a.elem, 0, (cap - old) * a.elem)
        self.fam_cap[fam][0] = cap
        return 0

    cdef int _new_word(self) noexcept nogil:
        """Reach word n_words (64 more inversions), zeroed, for every class."""
        cdef int w = self.n_words
        if w >= MAX_WORDS:
            return -1
        self._add_array(<void**>&self.dw[w], 8, FAM_WORDS, True, True)
        self._add_array(<void**>&self.aw[w], 8, FAM_WORDS, True, True)
        self.dw[w] = <uint64_t*>calloc(max(self.cap_cls, 1), 8)
        self.aw[w] = <uint64_t*>calloc(max(self.cap_cls, 1), 8)
        if self.dw[w] == NULL or self.aw[w] == NULL:
            self.oom = True
            return -1
        self.n_words += 1
        return 0

    cdef void _free_indexes(self) noexcept nogil:
        """Free the derived state: hash indexes and the per-class adjacency lists."""
        cdef int64_t i
        u64map_free(&self.cls_map)
        u64map_free(&self.thr_map)
        u64map_free(&self.inst_map)
        u64map_free(&self.inv_map)
        free(self.edge_idx.slots)
        self.edge_idx.slots = NULL
        free(self.chain_slots)
        self.chain_slots = NULL
        for i in range(self.cap_cls):
            if self.out_e != NULL:
                free(self.out_e[i])
                self.out_e[i] = NULL
            if self.in_e != NULL:
                free(self.in_e[i])
                self.in_e[i] = NULL

    cdef int64_t _index_bytes(self, int fam) noexcept nogil:
        """Bytes of the hash indexes kept for family `fam`."""
        cdef int64_t b = 0
        if fam == FAM_CLS:
            b = (self.cls_map.mask + 1) * 12
        elif fam == FAM_THR:
            b = (self.thr_map.mask + 1) * 12
        elif fam == FAM_EDGE:
            b = (self.edge_idx.mask + 1) * 4 + (self.inst_map.mask + 1) * 12
        elif fam == FAM_INV:
            b = (self.inv_map.mask + 1) * 12
        elif fam == FAM_CHAIN:
            b = (self.chain_mask + 1) * 4
        return b

    # ------------------------------------------------------------------ storage growth

    cdef int _ensure_cls(self, int64_t need) noexcept nogil:
        cdef int64_t cap = self.cap_cls
        if need <= cap:
            return 0
        return self._grow_family(FAM_CLS, max(need, cap + cap // 2, 256))

    cdef int _ensure_scratch(self) noexcept nogil:
        cdef int64_t need = 2 * self.n_cls + 2
        if need <= self.cap_scratch:
            return 0
        # fresh vis slots hold 0, which no generation equals; the generation itself runs on, as
        # mark_a/mark_b still hold stamps of earlier ones
        return self._grow_family(FAM_SCRATCH, max(need, self.cap_scratch + self.cap_scratch // 2))

    cdef int32_t _class(self, int32_t name, int32_t sub) noexcept nogil:
        cdef uint64_t key = ((<uint64_t>name) << 8) | <uint64_t>sub | TOP
        cdef int32_t c = u64map_get(&self.cls_map, key)
        cdef int w
        if c >= 0:
            return c
        if self._ensure_cls(self.n_cls + 1):
            return -1
        c = <int32_t>self.n_cls
        self.n_cls += 1
        self.cls_name[c] = name
        self.cls_sub[c] = <uint8_t>sub
        self.cls_usage[c] = 0
        self.cls_flags[c] = 0
        self.cls_reach[c] = 0
        memset(&self.cls_usage_occ[c * 8], 0xff, 32)
        self.rep[c] = c
        self.lvl[c] = 0
        self.mnext[c] = -1
        self.out_e[c] = NULL
        self.out_n[c] = 0
        self.out_c[c] = 0
        self.in_e[c] = NULL
        self.in_n[c] = 0
        self.in_c[c] = 0
        self.in0_n[c] = 0
        self.out0_n[c] = 0
        for w in range(self.n_words):
            self.dw[w][c] = 0
            self.aw[w][c] = 0
        if u64map_put(&self.cls_map, key, c):
            self.oom = True
        return c

    cdef int32_t _chain_find(self, uint64_t key) noexcept nogil:
        # the chain key is already a hash: its low bits pick the slot
        cdef int64_t i = <int64_t>(key & <uint64_t>self.chain_mask)
        cdef int32_t r
        while True:
            r = self.chain_slots[i]
            if r < 0:
                return -1
            if self.chains[r].key == key:
                return r
            i = (i + 1) & self.chain_mask

    cdef int _chain_index(self, int32_t ci) noexcept nogil:
        cdef int64_t i, c, mask
        cdef int32_t* slots
        cdef int32_t r
        if (self.n_chain + 1) * 4 > (self.chain_mask + 1) * 3:   # at most 3/4 full: 4-byte slots, short probes
            c = (self.chain_mask + 1) * 2
            mask = c - 1
            slots = <int32_t*>malloc(c * 4)
            if slots == NULL:
                self.oom = True
                return -1
            memset(slots, 0xff, c * 4)
            for r in range(<int32_t>self.n_chain):
                if r == ci:
                    continue
                i = <int64_t>(self.chains[r].key & <uint64_t>mask)
                while slots[i] >= 0:
                    i = (i + 1) & mask
                slots[i] = r
            free(self.chain_slots)
            self.chain_slots = slots
            self.chain_mask = mask
        i = <int64_t>(self.chains[ci].key & <uint64_t>self.chain_mask)
        while self.chain_slots[i] >= 0:
            i = (i + 1) & self.chain_mask
        self.chain_slots[i] = ci
        return 0

    cdef int32_t _thread(self, int32_t host, int64_t tid) noexcept nogil:
        # a 64-bit hash of (host, tid) identifies the thread; a collision between two live
        # threads needs ~2^32 of them
        cdef uint64_t key = mix64(mix64(<uint64_t>tid) ^ (<uint64_t>host * <uint64_t>0x9e3779b97f4a7c15)) | 1
        cdef int32_t t = u64map_get_h(&self.thr_map, key, key)
        cdef int64_t cap, d = self.max_depth
        if t >= 0:
            return t
        if self.n_thr + 1 > self.cap_thr:
            cap = max(self.cap_thr + self.cap_thr // 2, 16)
            if self._grow_family(FAM_THR, cap):
                return -1
        t = <int32_t>self.n_thr
        self.n_thr += 1
        self.thr_host[t] = host
        self.thr_tid[t] = tid
        self.thr_depth[t] = 0
        self.thr_over[t] = 0
        self.thr_seed[t] = mix64(<uint64_t>host + <uint64_t>0x51ed270b27f4a7c1)
        if u64map_put_h(&self.thr_map, key, key, t, True):
            self.oom = True
        return t

    cdef int32_t _occ(self, int32_t cls, uint8_t mode, uint8_t trylock, uint64_t inst, int32_t site,
                      int32_t host, int32_t task, int64_t tid, int64_t ts, uint8_t irq) noexcept nogil:
        cdef int64_t cap
        cdef int32_t o
        if self.n_occ + 1 > self.cap_occ:
            cap = max(self.cap_occ + self.cap_occ // 2, 1024)
            if self._grow_family(FAM_OCC, cap):
                return -1
        o = <int32_t>self.n_occ
        self.n_occ += 1
        self.oc_cls[o] = cls
        self.oc_site[o] = site
        self.oc_host[o] = host
        self.oc_task[o] = task
        self.oc_tid[o] = tid
        self.oc_ts[o] = ts
        self.oc_inst[o] = inst
        self.oc_mode[o] = mode
        self.oc_try[o] = trylock
        self.oc_irq[o] = irq
        return o

    cdef int32_t _held_occ(self, int32_t th, int64_t slot) noexcept nogil:
        return self._occ(self.st[slot].cls, self.st[slot].mode, self.st[slot].trylock, self.st[slot].inst,
                         self.st[slot].site, self.thr_host[th], self.st[slot].task, self.thr_tid[th],
                         self.st[slot].ts, self.st[slot].irq)

    cdef int _finding(self, int32_t kind, int32_t row, int32_t a, int32_t b, int32_t c, int32_t d,
                      int32_t occ, int32_t th) noexcept nogil:
        """Record a finding; with th >= 0, snapshot that thread's held locks as evidence."""
        cdef int64_t cap, j, base
        cdef int32_t f
        if self.n_f + 1 > self.cap_f:
            cap = max(self.cap_f + self.cap_f // 2, 64)
            if self._grow_family(FAM_F, cap):
                return -1
        f = <int32_t>self.n_f
        self.n_f += 1
        self.f_kind[f] = kind
        self.f_row[f] = row
        self.f_a[f] = a
        self.f_b[f] = b
        self.f_c[f] = c
        self.f_d[f] = d
        self.f_occ[f] = occ
        self.f_hoff[f] = self.n_fh
        self.f_hn[f] = 0
        self.f_poff[f] = self.n_fp
        self.f_pn[f] = 0
        if th >= 0:
            base = <int64_t>th * self.max_depth
            for j in range(self.thr_depth[th]):
                if self._push_i32(&self.fh, &self.n_fh, &self.cap_fh, self._held_occ(th, base + j)):
                    return -1
                self.f_hn[f] += 1
        return 0

    cdef int _push_i32(self, int32_t** arr, int64_t* n, int64_t* cap, int32_t v) noexcept nogil:
        cdef int64_t c
        if n[0] + 1 > cap[0]:
            c = max(cap[0] + cap[0] // 2, 256)
            if _grow(<void**>arr, c, 4):
                self.oom = True
                return -1
            cap[0] = c
        arr[0][n[0]] = v
        n[0] += 1
        return 0

    # ------------------------------------------------------------------ per event

    cdef int32_t _edge(self, int32_t src, int32_t dst, int k, int32_t th, int64_t slot,
                       int32_t cls, uint8_t mode, uint64_t inst, int32_t site, int32_t task,
                       int64_t ts, uint8_t irq, int32_t row) noexcept nogil:
        """Record the dependency src -> dst of kind k (lockdep's check_prev_add, without the search:
        that happens per batch on the arrivals)."""
        cdef int32_t e = pairidx_find(&self.edge_idx, self.e_src, self.e_dst, src, dst)
        cdef int32_t host = self.thr_host[th]
        cdef int64_t cap, p
        cdef int nx
        cdef bint new_pair = False
        if e < 0:
            if self.n_edge + 1 > self.cap_edge:
                cap = max(self.cap_edge + self.cap_edge // 4, 1024)   # 1.25x: the biggest tables, least slack
                if self._grow_family(FAM_EDGE, cap):
                    return -1
            e = <int32_t>self.n_edge
            self.n_edge += 1
            self.e_src[e] = src
            self.e_dst[e] = dst
            self.e_kinds[e] = 0
            self.e_bkinds[e] = 0
            self.e_flags[e] = 0
            self.ev_task[e] = task
            self.ev_ts[e] = ts
            self.ev_site_h[e] = self.st[slot].site
            self.ev_site_t[e] = site
            if self.st[slot].inst or inst:
                if self._add_instances(e, self.st[slot].inst, inst):
                    return -1
            self.ev_modes[e] = <uint8_t>(mode | (self.st[slot].trylock << 2) | (self.st[slot].mode << 3))
            self.e_hosts[e] = -1
            self.e_host0[e] = host
            self.e_sketch[e] = -1
            self.e_count[e] = 0
            self.e_base[e] = 0
            self.e_last[e] = ts
            if pairidx_add(&self.edge_idx, self.e_src, self.e_dst, e):
                self.oom = True
            new_pair = True
        if not (self.e_kinds[e] >> k) & 1:
            self.e_kinds[e] |= <uint8_t>(1 << k)
            if k & 1:
                self.any_rread = True
            self.arrival_seq += 1
            if self.n_ar + 1 > self.cap_ar:
                cap = max(self.cap_ar + self.cap_ar // 2, 256)
                if self._grow_family(FAM_AR, cap):
                    return -1
            self.ar_edge[self.n_ar] = e
            self.ar_kind[self.n_ar] = <uint8_t>k
            self.ar_new[self.n_ar] = new_pair
            self.ar_seq[self.n_ar] = self.arrival_seq
            self.ar_row[self.n_ar] = row
            self.ar_next[self.n_ar] = -1
            if self.e_bkinds[e] == 0:
                self.e_bfirst[e] = <int32_t>self.n_ar
            else:
                p = self.e_bfirst[e]
                while self.ar_next[p] >= 0:
                    p = self.ar_next[p]
                self.ar_next[p] = <int32_t>self.n_ar
            self.e_bkinds[e] |= <uint8_t>(1 << k)
            self.n_ar += 1
        if self.e_host0[e] == host:      # the first host is inline: one host costs no pair entry
            return e
        # the next exact_hosts - 1 hosts: a short list, walked (a new chain is rare on the hot path)
        nx = 1
        p = self.e_hosts[e]
        while p >= 0:
            if self.ph_host[p] == host:
                return e
            nx += 1
            p = self.ph_next[p]
        if nx >= self.exact_hosts:     # the named hosts are full: the sketch counts this one
            if self._sketch_add(e, host):
                return -1
            return e
        if self.n_pair + 1 > self.cap_pair:
            cap = max(self.cap_pair + self.cap_pair // 2, 1024)
            if self._grow_family(FAM_PAIR, cap):
                return -1
        p = self.n_pair
        self.n_pair += 1
        self.ph_host[p] = host
        self.ph_next[p] = self.e_hosts[e]
        self.e_hosts[e] = <int32_t>p
        return e

    cdef int _sketch_add(self, int32_t e, int32_t host) noexcept nogil:
        """Count a host past the named ones in the dependency's sketch (allocated now if new)."""
        cdef int64_t s = self.e_sketch[e]
        if s < 0:
            if self.n_sk + 1 > self.cap_sk:
                if self._grow_family(FAM_SK, max(self.cap_sk + self.cap_sk // 2, 64)):
                    return -1
            s = self.n_sk
            self.n_sk += 1
            memset(&self.sk_reg[s * HLL_M], 0, HLL_M)
            self.e_sketch[e] = <int32_t>s
        _hll_add(&self.sk_reg[s * HLL_M], host)
        return 0

    cdef int _add_instances(self, int32_t e, uint64_t held, uint64_t taken) noexcept nogil:
        cdef int64_t cap
        if self.n_ei + 1 > self.cap_ei:
            cap = max(self.cap_ei + self.cap_ei // 2, 256)
            if self._grow_family(FAM_EI, cap):
                return -1
        self.ei_edge[self.n_ei] = e
        self.ei_h[self.n_ei] = held
        self.ei_t[self.n_ei] = taken
        if u64map_put(&self.inst_map, <uint64_t>e | TOP, <int32_t>self.n_ei):
            self.oom = True
            return -1
        self.n_ei += 1
        return 0

    cdef void _mark_usage(self, int32_t c, uint8_t mode, uint8_t irq, int32_t th, int32_t* occ_t,
                          uint8_t trylock, uint64_t inst, int32_t site, int32_t task, int64_t ts,
                          int32_t row) noexcept nogil:
        """lockdep's mark_usage + valid_state: set the class's irq usage bits; a conflict between
        in-irq and irq-enabled use of one class is an inconsistent_state finding."""
        cdef uint8_t rd = 1 if mode != 0 else 0
        cdef uint8_t new = 0, added, old, u
        cdef int x, bit, b_in_w, b_in_r, b_on_w, b_on_r, earlier, later
        # lockdep's mark_usage: only a non-trylock acquisition marks "used in irq"
        if irq & 1 and not trylock:
            new |= <uint8_t>(1 << (0 + rd))
        if irq & 2 and not trylock:
            new |= <uint8_t>(1 << (4 + rd))
        if not (irq & 5):
            new |= <uint8_t>(1 << (2 + rd))
            if not (irq & 10):
                new |= <uint8_t>(1 << (6 + rd))
        old = self.cls_usage[c]
        added = new & ~old
        if not added:
            return
        if occ_t[0] < 0:
            occ_t[0] = self._occ(c, mode, trylock, inst, site, self.thr_host[th], task,
                                 self.thr_tid[th], ts, irq)
        for bit in range(8):
            if (added >> bit) & 1:
                self.cls_usage_occ[c * 8 + bit] = occ_t[0]
        u = old | added
        self.cls_usage[c] = u
        for x in range(2):
            b_in_w, b_in_r, b_on_w, b_on_r = 4 * x, 4 * x + 1, 4 * x + 2, 4 * x + 3
            if self.cls_flags[c] & (CF_INCONSISTENT_HARD << x):
                continue
            if not (((u >> b_in_w) & 1 and ((u >> b_on_w) & 1 or (u >> b_on_r) & 1))
                    or ((u >> b_in_r) & 1 and (u >> b_on_w) & 1)):
                continue
            # the bit this acquisition added, against the conflicting one registered before
            later = -1
            for bit in range(4 * x, 4 * x + 4):
                if (added >> bit) & 1:
                    later = bit
            if later < 0:
                continue
            earlier = -1
            for bit in range(4 * x, 4 * x + 4):
                if (old >> bit) & 1 and (bit & 2) != (later & 2) and not ((bit & 1) and (later & 1)):
                    earlier = bit
                    break
            if earlier < 0:
                continue
            self.cls_flags[c] |= <uint8_t>(CF_INCONSISTENT_HARD << x)
            self._finding(F_INCONSISTENT, row, c, x, earlier, later, occ_t[0], th)
        if not (self.cls_flags[c] & CF_USAGE_CHANGED):
            self.cls_flags[c] |= CF_USAGE_CHANGED
            self._push_i32(&self.uc_cls, &self.n_uc, &self.cap_uc, c)

    cdef int32_t _validate(self, int32_t th, int32_t c, uint8_t mode, uint8_t trylock, uint8_t irq,
                           uint64_t inst, int32_t site, int32_t task, int64_t ts, int32_t row,
                           uint64_t key, bint reacquire) noexcept nogil:
        """A chain not seen before: lockdep's validate_chain. Returns the occurrence it recorded
        for this acquisition, if any (-1), so that dependencies out of it can share it."""
        cdef int64_t cap, base = <int64_t>th * self.max_depth
        cdef int32_t d = self.thr_depth[th], j, hc, e, ci
        cdef int32_t occ_t = -1
        cdef int k
        cdef uint8_t ctx = irq & 3
        cdef int32_t ne = 0
        if self.n_chain >= self.max_chains:
            self._flush_chains()
        if self.n_chain + 1 > self.cap_chain:
            cap = max(self.cap_chain + self.cap_chain // 4, 1024)
            if self._grow_family(FAM_CHAIN, cap):
                return -1
        ci = <int32_t>self.n_chain
        self.n_chain += 1
        self.chains[ci].key = key
        self.chains[ci].count = 1
        self.chains[ci].last_s = _seconds(ts)
        self.chains[ci].edges = -1
        if self._chain_index(ci):
            return -1
        if not reacquire:
            self._mark_usage(c, mode, irq, th, &occ_t, trylock, inst, site, task, ts, row)
        if trylock:
            return occ_t
        if not reacquire:
            for j in range(d):
                if self.st[base + j].cls == c and not (mode == 2 and self.st[base + j].mode != 0):
                    if occ_t < 0:
                        occ_t = self._occ(c, mode, 0, inst, site, self.thr_host[th], task,
                                          self.thr_tid[th], ts, irq)
                    self._finding(F_RECURSIVE, row, c, -1, -1, -1, occ_t, th)
                    return occ_t
        j = d - 1
        while j >= 0:
            if (self.st[base + j].irq & 3) != ctx:
                break
            hc = self.st[base + j].cls
            if hc != c:
                k = (2 if self.st[base + j].mode != 0 else 0) + (1 if mode == 2 else 0)
                e = self._edge(hc, c, k, th, base + j, c, mode, inst, site, task, ts, irq, row)
                if e < 0:
                    return -1
                self.ra_edges[ne] = e
                ne += 1
            if not self.st[base + j].trylock:
                break
            j -= 1
        # most chains make one dependency: keep it inline, spill longer lists to ce_edge
        if ne == 1:
            self.chains[ci].edges = self.ra_edges[0]
        elif ne > 1:
            self.chains[ci].edges = -2 - <int32_t>self.n_ce
            if self._push_i32(&self.ce_edge, &self.n_ce, &self.cap_ce, ne):
                return -1
            for j in range(ne):
                if self._push_i32(&self.ce_edge, &self.n_ce, &self.cap_ce, self.ra_edges[j]):
                    return -1
        return occ_t

    cdef void _acquire(self, int32_t th, int32_t c, int32_t name, uint8_t mode, uint8_t trylock,
                       uint8_t irq, uint64_t inst, int32_t site, int32_t task, int64_t ts,
                       int32_t row, bint reacquire, uint64_t times) noexcept nogil:
        """`times`: how many acquisitions this row stands for (an edge-mode agent's `count`; 0 makes
        the dependency without counting it)."""
        cdef int32_t d = self.thr_depth[th], ci, occ
        cdef int64_t slot = <int64_t>th * self.max_depth + d
        cdef uint64_t key
        if d >= self.max_depth:
            self.depth_overflows += 1
            self.thr_over[th] += 1
            if self.n_ov < 64:
                self.ov_host[self.n_ov] = self.thr_host[th]
                self.ov_tid[self.n_ov] = self.thr_tid[th]
                self.n_ov += 1
            return
        key = self.st[slot - 1].key if d > 0 else self.thr_seed[th]
        key = mix64(key ^ ((<uint64_t>c << 8) | mode | (<uint64_t>trylock << 2) | (<uint64_t>irq << 3)
                           | (<uint64_t>reacquire << 7))) | 1
        ci = self._chain_find(key)
        if ci >= 0:
            self.chain_hits += 1
            self.chains[ci].count += times
            self.chains[ci].last_s = _seconds(ts)
            occ = -1
        else:
            self.chain_misses += 1
            self._validate(th, c, mode, trylock, irq, inst, site, task, ts, row, key, reacquire)
            if times != 1 and not self.oom:
                self.chains[self.n_chain - 1].count = times
        self.st[slot].cls = c
        self.st[slot].name = name
        self.st[slot].site = site
        self.st[slot].task = task
        self.st[slot].inst = inst
        self.st[slot].ts = ts
        self.st[slot].key = key
        self.st[slot].mode = mode
        self.st[slot].trylock = trylock
        self.st[slot].irq = irq
        self.thr_depth[th] = d + 1

    cdef void _release(self, int32_t th, int32_t name, int32_t sub, uint64_t inst, int32_t site,
                       int32_t task, int64_t ts, uint8_t irq, int32_t row) noexcept nogil:
        """lockdep's __lock_release: find the held lock, drop it, re-acquire what was above it."""
        cdef int64_t base = <int64_t>th * self.max_depth, s
        cdef int32_t d = self.thr_depth[th], j, i, n, c, occ
        j = d - 1
        while j >= 0:
            s = base + j
            if self.st[s].name == name and (inst == 0 or self.st[s].inst == 0 or self.st[s].inst == inst):
                break
            j -= 1
        if j < 0:
            if self.thr_over[th] > 0:
                self.thr_over[th] -= 1
                return
            c = self._class(name, sub)
            if c < 0:
                return
            occ = self._occ(c, 0, 0, inst, site, self.thr_host[th], task, self.thr_tid[th], ts, irq)
            self._finding(F_BAD_UNLOCK, row, c, -1, -1, -1, occ, th)
            return
        if j == d - 1:
            self.thr_depth[th] = d - 1
            return
        n = d - 1 - j
        for i in range(n):
            s = base + j + 1 + i
            self.ra_cls[i] = self.st[s].cls
            self.ra_name[i] = self.st[s].name
            self.ra_site[i] = self.st[s].site
            self.ra_task[i] = self.st[s].task
            self.ra_inst[i] = self.st[s].inst
            self.ra_ts[i] = self.st[s].ts
            self.ra_mode[i] = self.st[s].mode
            self.ra_try[i] = self.st[s].trylock
            self.ra_irq[i] = self.st[s].irq
        self.thr_depth[th] = j
        for i in range(n):
            self._acquire(th, self.ra_cls[i], self.ra_name[i], self.ra_mode[i], self.ra_try[i],
                          self.ra_irq[i], self.ra_inst[i], self.ra_site[i], self.ra_task[i],
                          self.ra_ts[i], row, True, 1)

    cdef int _run(self, Py_ssize_t n, const int64_t* ts, const int64_t* tid, const uint8_t* op,
                  const int32_t* lk, const int32_t* lk_map, int32_t* cls_cache,
                  const uint8_t* mode, const uint8_t* sub, const uint64_t* inst, const uint8_t* irq,
                  const int32_t* site, const int32_t* site_map, const int32_t* task,
                  const int32_t* task_map, const int32_t* host, const int32_t* host_map,
                  const uint64_t* count, int32_t default_host) noexcept nogil:
        cdef Py_ssize_t r
        cdef int32_t th = -1, h, lh = -1, li, nm, c, si, tk, tcs
        cdef int64_t t, lt = 0
        cdef uint8_t o, m, s, iq
        cdef uint64_t ins
        for r in range(n):
            h = default_host
            if host != NULL and host[r] >= 0:
                h = host_map[host[r]]
            t = tid[r]
            if th < 0 or h != lh or t != lt:
                # many threads interleaved row by row: a direct-mapped cache of recent threads
                # spares the hash of (host, tid) and its probe
                tcs = <int32_t>((<uint64_t>t + <uint64_t>h * 40503) & (TCACHE - 1))
                if self.tc_th[tcs] >= 0 and self.tc_tid[tcs] == t and self.thr_host[self.tc_th[tcs]] == h:
                    th = self.tc_th[tcs]
                else:
                    th = self._thread(h, t)
                    if th < 0:
                        return -1
                    self.tc_th[tcs] = th
                    self.tc_tid[tcs] = t
                lh = h
                lt = t
            o = op[r]
            li = lk[r]
            nm = lk_map[li]
            m = mode[r] if mode != NULL else 0
            s = sub[r] if sub != NULL else 0
            iq = irq[r] if irq != NULL else 0
            ins = inst[r] if inst != NULL else 0
            si = site_map[site[r]] if (site != NULL and site[r] >= 0) else -1
            tk = task_map[task[r]] if (task != NULL and task[r] >= 0) else -1
            if o == 1:
                self.releases += 1
                self._release(th, nm, s, ins, si, tk, ts[r], iq, <int32_t>r)
                continue
            self.acquires += 1
            if s == 0:
                c = cls_cache[li]
                if c < 0:
                    c = self._class(nm, 0)
                    cls_cache[li] = c
            else:
                c = self._class(nm, s)
            if c < 0:
                return -1
            self._acquire(th, c, nm, m, 1 if o == 2 else 0, iq, ins, si, tk, ts[r], <int32_t>r, False,
                          count[r] if count != NULL else 1)
            if self.oom:
                return -1
        return -1 if self.oom else 0

    # ------------------------------------------------------------------ Python surface

    def ingest(self, const int64_t[::1] ts, const int64_t[::1] tid, const uint8_t[::1] op,
               const int32_t[::1] lock, const int32_t[::1] lock_map,
               mode=None, subclass=None, instance=None, irq=None,
               site=None, site_map=None, task=None, task_map=None, host=None, host_map=None,
               count=None, int default_host=0):
        """Apply one validated batch (flat columns; string columns as per-row dictionary indices
        plus per-batch maps from dictionary index to global id). Returns the number of findings;
        read them with findings()."""
        cdef Py_ssize_t n = ts.shape[0]
        cdef const uint8_t[::1] v_mode, v_sub, v_irq
        cdef const uint64_t[::1] v_inst, v_count
        cdef const uint64_t* p_count = NULL
        cdef const int32_t[::1] v_site, v_site_map, v_task, v_task_map, v_host, v_host_map
        cdef const uint8_t* p_mode = NULL
        cdef const uint8_t* p_sub = NULL
        cdef const uint8_t* p_irq = NULL
        cdef const uint64_t* p_inst = NULL
        cdef const int32_t* p_site = NULL
        cdef const int32_t* p_site_map = NULL
        cdef const int32_t* p_task = NULL
        cdef const int32_t* p_task_map = NULL
        cdef const int32_t* p_host = NULL
        cdef const int32_t* p_host_map = NULL
        cdef int rc
        cdef cnp.ndarray[int32_t, ndim=1] cache = np.full(max(lock_map.shape[0], 1), -1, dtype=np.int32)
        cdef int32_t* p_cache = <int32_t*>cache.data
        if n == 0:
            return 0
        if tid.shape[0] != n or op.shape[0] != n or lock.shape[0] != n:
            raise ValueError("columns differ in length")
        if mode is not None:
            v_mode = mode
            p_mode = &v_mode[0]
        if subclass is not None:
            v_sub = subclass
            p_sub = &v_sub[0]
        if irq is not None:
            v_irq = irq
            p_irq = &v_irq[0]
        if instance is not None:
            v_inst = instance
            p_inst = &v_inst[0]
        if site is not None:
            v_site = site
            p_site = &v_site[0]
            v_site_map = site_map
            p_site_map = &v_site_map[0] if v_site_map.shape[0] else NULL
        if task is not None:
            v_task = task
            p_task = &v_task[0]
            v_task_map = task_map
            p_task_map = &v_task_map[0] if v_task_map.shape[0] else NULL
        if count is not None:
            v_count = count
            p_count = &v_count[0]
        if host is not None:
            v_host = host
            p_host = &v_host[0]
            v_host_map = host_map
            p_host_map = &v_host_map[0] if v_host_map.shape[0] else NULL
        self.n_f = 0
        self.n_fh = 0
        self.n_fp = 0
        self.n_ov = 0
        self.batch_e0 = self.n_edge
        with nogil:
            rc = self._run(n, &ts[0], &tid[0], &op[0], &lock[0], &lock_map[0], p_cache,
                           p_mode, p_sub, p_inst, p_irq, p_site, p_site_map, p_task, p_task_map,
                           p_host, p_host_map, p_count, default_host)
            if rc == 0:
                rc = _finish_batch(self)
            if rc == 0 and self.n_thr >= self.thr_sweep_at:
                self._sweep_threads()
                if self.oom:
                    rc = -1
        self.events += n
        self.counts_dirty = True
        if rc != 0:
            raise MemoryError("lockfleet core: out of memory")
        return self.n_f

    def findings(self):
        """This batch's findings, in row order: (kind, row, a, b, c, d, occ, held occs, path edges)."""
        out = []
        cdef int64_t f, j
        for f in range(self.n_f):
            held = [self.fh[self.f_hoff[f] + j] for j in range(self.f_hn[f])]
            path = [self.fp[self.f_poff[f] + j] for j in range(self.f_pn[f])]
            out.append((self.f_kind[f], self.f_row[f], self.f_a[f], self.f_b[f], self.f_c[f],
                        self.f_d[f], self.f_occ[f], held, path))
        out.sort(key=lambda t: t[1])
        return out

    def inversions(self):
        """Every inversion in arrival order: (dependency, witnesses counted, witnesses kept)."""
        return [(self.inv_edge[i], self.inv_wit[i], self.inv_kept[i]) for i in range(self.n_inv)]

    def inversion_witnesses(self, int64_t i):
        """Witnesses counted for inversion i (its own cycle included)."""
        return self.inv_wit[i] if 0 <= i < self.n_inv else 0

    def is_inversion(self, int32_t e):
        return 0 <= e < self.n_edge and bool(self.e_flags[e] & EF_INV)

    def check_invariants(self):
        """Check the order's invariants (graph.pxi's _check_invariants); AssertionError names the
        first one broken. Linear in the graph, with the reach words."""
        cdef int bad
        with nogil:
            bad = _check_invariants(self)
        if bad < 0:
            raise MemoryError()
        if bad:
            raise AssertionError({
                1: "an order dependency between components does not climb the levels",
                2: "component membership or adjacency is inconsistent",
                3: "the per-class order edge counts disagree with the order",
                4: "inversion flags disagree with the inversion list",
                5: "a reach word is not closed under the dependencies",
            }[bad])

    def overflows(self):
        """(host id, tid) of this batch's first depth overflows, for the log."""
        return [(self.ov_host[i], self.ov_tid[i]) for i in range(self.n_ov)]

    def class_count(self):
        return self.n_cls

    def edge_count(self):
        return self.n_edge

    def thread_count(self):
        return self.n_thr

    def chain_count(self):
        return self.n_chain

    def class_info(self, int32_t c):
        """(name id, subclass, usage bits) of class c."""
        return (self.cls_name[c], self.cls_sub[c], self.cls_usage[c])

    def class_usage_occ(self, int32_t c, int bit):
        return self.cls_usage_occ[c * 8 + bit]

    def find_class(self, int32_t name, int32_t sub):
        return u64map_get(&self.cls_map, ((<uint64_t>name) << 8) | <uint64_t>sub | TOP)

    def occurrence(self, int32_t o):
        """(class, mode, trylock, instance, site id, host id, task id, tid, ts, irq)."""
        return (self.oc_cls[o], self.oc_mode[o], self.oc_try[o], self.oc_inst[o], self.oc_site[o],
                self.oc_host[o], self.oc_task[o], self.oc_tid[o], self.oc_ts[o], self.oc_irq[o])

    cdef void _count_edge(self, int32_t e, int64_t ci) noexcept nogil:
        cdef int64_t last = <int64_t>self.chains[ci].last_s * 1000000000
        self.e_count[e] += self.chains[ci].count
        if last > self.e_last[e]:
            self.e_last[e] = last

    cdef void _refresh_counts(self) noexcept nogil:
        cdef int64_t ci, j, off
        cdef int32_t e
        if not self.counts_dirty:
            return
        if self.n_edge:
            memcpy(self.e_count, self.e_base, self.n_edge * 8)
        for ci in range(self.n_chain):
            e = self.chains[ci].edges
            if e >= 0:
                self._count_edge(e, ci)
            elif e <= -2:
                off = -2 - e
                for j in range(self.ce_edge[off]):
                    self._count_edge(self.ce_edge[off + 1 + j], ci)
        self.counts_dirty = False

    cdef void _flush_chains(self) noexcept nogil:
        """The chain cache is full (lockdep stops at MAX_LOCKDEP_CHAINS): fold the chains' counts
        into their dependencies and empty it. A chain met again misses and is validated again,
        which finds what it found the first time and adds nothing new."""
        self.counts_dirty = True
        self._refresh_counts()
        if self.n_edge:
            memcpy(self.e_base, self.e_count, self.n_edge * 8)
        self.n_chain = 0
        self.n_ce = 0
        memset(self.chain_slots, 0xff, (self.chain_mask + 1) * 4)
        self.chain_flushes += 1

    cdef void _sweep_threads(self) noexcept nogil:
        """Drop the threads whose held stack is empty (and that owe no untracked release): such a
        thread is in the state a new one starts in, so dropping it changes nothing but memory.
        The live ones move down, the thread index and cache are rebuilt, the arrays shrink."""
        cdef int64_t t, j = 0, d = self.max_depth, cap
        cdef uint64_t key
        for t in range(self.n_thr):
            if self.thr_depth[t] == 0 and self.thr_over[t] == 0:
                continue
            if j != t:
                self.thr_host[j] = self.thr_host[t]
                self.thr_tid[j] = self.thr_tid[t]
                self.thr_depth[j] = self.thr_depth[t]
                self.thr_over[j] = self.thr_over[t]
                self.thr_seed[j] = self.thr_seed[t]
                memcpy(&self.st[j * d], &self.st[t * d], self.thr_depth[t] * sizeof(Held))
            j += 1
        self.threads_dropped += self.n_thr - j
        self.n_thr = j
        memset(self.tc_th, 0xff, sizeof(self.tc_th))
        u64map_free(&self.thr_map)
        if u64map_init(&self.thr_map, 2 * j + 16):
            self.oom = True
            return
        for t in range(j):
            key = mix64(mix64(<uint64_t>self.thr_tid[t]) ^ (<uint64_t>self.thr_host[t] * <uint64_t>0x9e3779b97f4a7c15)) | 1
            if u64map_put_h(&self.thr_map, key, key, <int32_t>t, True):
                self.oom = True
                return
        cap = max(2 * j, 16)
        if self.cap_thr > 2 * cap and self._grow_family(FAM_THR, cap):
            return
        self.thr_sweep_at = max(2 * j, THREAD_SWEEP_MIN)

    def sweep_threads(self):
        """Drop the threads with an empty held stack now (ingest does it once the table doubled)."""
        with nogil:
            self._sweep_threads()
        if self.oom:
            raise MemoryError()

    def edge_hosts(self, int32_t e):
        """(named host ids, estimate of the hosts past them): the first exact_hosts hosts of the
        dependency by name, the rest counted by its sketch (0 when it has none)."""
        cdef int32_t p = self.e_hosts[e]
        hosts = [self.e_host0[e]]
        while p >= 0:
            hosts.append(self.ph_host[p])
            p = self.ph_next[p]
        if self.e_sketch[e] < 0:
            return hosts, 0
        return hosts, <int64_t>(_hll_estimate(&self.sk_reg[<int64_t>self.e_sketch[e] * HLL_M]) + 0.5)

    def edge_host_count(self, int32_t e):
        """Hosts that took dependency e: exact up to exact_hosts, named plus the sketch's estimate past."""
        hosts, extra = self.edge_hosts(e)
        return len(hosts) + extra

    def host_union(self, edges, extra_hosts=()):
        """(hosts, exact): how many distinct hosts took any of `edges` or are in `extra_hosts` (ids).
        Exact when none of the dependencies has a sketch; otherwise every named host and every
        sketch merged into one sketch (registerwise maximum) and estimated, never below the named
        hosts' count."""
        cdef uint8_t reg[HLL_M]
        cdef int64_t s, i
        exact = set(extra_hosts)
        sketched = []
        for e in edges:
            hosts, _ = self.edge_hosts(e)
            exact.update(hosts)
            if self.e_sketch[<int32_t>e] >= 0:
                sketched.append(self.e_sketch[<int32_t>e])
        if not sketched:
            return len(exact), True
        memset(reg, 0, HLL_M)
        for s in sketched:
            for i in range(HLL_M):
                if self.sk_reg[s * HLL_M + i] > reg[i]:
                    reg[i] = self.sk_reg[s * HLL_M + i]
        for h in exact:
            _hll_add(reg, <int32_t>h)
        return max(len(exact), <int64_t>(_hll_estimate(reg) + 0.5)), False

    def sketch_count(self):
        """Dependencies whose hosts outgrew the named ones (each has a sketch)."""
        return self.n_sk

    @staticmethod
    def hll_estimate_of(host_ids):
        """The sketch's estimate for a set of host ids (for tests of the estimator itself)."""
        cdef uint8_t reg[HLL_M]
        memset(reg, 0, HLL_M)
        for h in host_ids:
            _hll_add(reg, <int32_t>h)
        return <int64_t>(_hll_estimate(reg) + 0.5)

    def edge_info(self, int32_t e):
        """(src, dst, kinds bits, first host, task, ts, held site, taken site, held instance,
        taken instance, taken mode, held trylock, held mode, count, last ts, [host ids])."""
        cdef int32_t p
        with nogil:
            self._refresh_counts()
        cdef int32_t i = u64map_get(&self.inst_map, <uint64_t>e | TOP)
        hosts = [self.e_host0[e]]
        p = self.e_hosts[e]
        while p >= 0:
            hosts.append(self.ph_host[p])
            p = self.ph_next[p]
        return (self.e_src[e], self.e_dst[e], self.e_kinds[e], self.e_host0[e], self.ev_task[e],
                self.ev_ts[e], self.ev_site_h[e], self.ev_site_t[e],
                self.ei_h[i] if i >= 0 else 0, self.ei_t[i] if i >= 0 else 0, self.ev_modes[e] & 3, (self.ev_modes[e] >> 2) & 1,
                (self.ev_modes[e] >> 3) & 3,
                self.e_count[e], self.e_last[e], hosts)

    def edges(self):
        """(src, dst, kinds) arrays of every dependency."""
        n = self.n_edge
        src = np.empty(n, dtype=np.int32)
        dst = np.empty(n, dtype=np.int32)
        kinds = np.empty(n, dtype=np.uint8)
        cdef int32_t[::1] vs = src
        cdef int32_t[::1] vd = dst
        cdef uint8_t[::1] vk = kinds
        cdef int64_t i
        for i in range(n):
            vs[i] = self.e_src[i]
            vd[i] = self.e_dst[i]
            vk[i] = self.e_kinds[i]
        return src, dst, kinds

    def edge_counts(self):
        """(count, last ts) arrays of every dependency, current (one bulk read: edge-mode export
        compares them with what it shipped instead of asking per dependency)."""
        cdef int64_t n = self.n_edge
        with nogil:
            self._refresh_counts()
        count = np.empty(n, dtype=np.uint64)
        last = np.empty(n, dtype=np.int64)
        if n:
            memcpy(<void*>cnp.PyArray_DATA(count), self.e_count, n * 8)
            memcpy(<void*>cnp.PyArray_DATA(last), self.e_last, n * 8)
        return count, last

    def class_usages(self):
        """The irq usage bits of every class (uint8 array, bit 4x + (IN-W, IN-R, ON-W, ON-R))."""
        cdef int64_t n = self.n_cls
        usage = np.empty(n, dtype=np.uint8)
        if n:
            memcpy(<void*>cnp.PyArray_DATA(usage), self.cls_usage, n)
        return usage

    def shortest_path(self, int32_t a, int32_t b):
        """Edges of a shortest dependency path a ~> b (any kinds), or None."""
        cdef int found
        if a < 0 or b < 0 or a >= self.n_cls or b >= self.n_cls:
            return None
        with nogil:
            found = _plain_bfs(self, a, b)
        if found <= 0:
            return None
        return [self.path[i] for i in range(self.path_n)]

    def memory_bytes(self):
        """Bytes held by the core's tables (capacities, not sizes)."""
        return sum(self.memory_breakdown().values())

    def memory_breakdown(self):
        """Bytes per table group (capacities), from the array table and the derived indexes."""
        cdef int i, f
        cdef int64_t x
        out = dict.fromkeys(_MEMORY_GROUPS, 0)
        for i in range(self.n_arrays):
            f = self.arrays[i].fam
            out[_MEMORY_GROUPS[_FAMILY_GROUP[f]]] += self.fam_cap[f][0] * self.arrays[i].elem
        for f in range(N_FAMILIES):
            out[_MEMORY_GROUPS[_FAMILY_GROUP[f]]] += self._index_bytes(f)
        for x in range(self.n_cls):
            out["adjacency"] += 8 * self.out_c[x] + 4 * self.in_c[x]
        return out

    def array_table(self):
        """The array table, for tests and the memory figures: (family, element bytes, in
        snapshots, allocated) per array, in declaration order."""
        return [(self.arrays[i].fam, self.arrays[i].elem, bool(self.arrays[i].snap),
                 self.arrays[i].ptr[0] != NULL) for i in range(self.n_arrays)]

    # ------------------------------------------------------------------ snapshots
    # A snapshot is a header of counts, then every array the table marks for snapshots, raw, in
    # table order (as many elements as its family counts), then the adjacency lists; the hash
    # indexes are not saved but rebuilt from the arrays on load (they are derived state).

    def dump(self):
        """The whole core state as bytes (see load)."""
        cdef int i
        cdef int64_t x, nb
        parts = [_SNAP_MAGIC]
        header = [self.max_depth, self.n_cls, self.n_thr, self.n_occ, self.n_edge, self.n_pair,
                  self.n_chain, self.n_ce, self.n_ei, self.arrival_seq, self.any_safe, self.events,
                  self.acquires, self.releases, self.depth_overflows, self.chain_hits,
                  self.chain_misses, self.recomputes, self.reorders, self.searches,
                  self.search_budget_exhausted, self.n_inv, self.n_words, self.any_rread,
                  self.witnesses, self.witness_budget_exhausted, self.inversions_untracked,
                  self.n_sk, self.max_chains, self.chain_flushes, self.threads_dropped, self.exact_hosts]
        parts.append(np.array(header, dtype=np.int64).tobytes())
        for i in range(self.n_arrays):
            if self.arrays[i].snap:
                nb = self.arrays[i].elem * self.fam_n[self.arrays[i].fam][0]
                if nb:
                    parts.append((<char*>self.arrays[i].ptr[0])[:nb])
        outn = np.array([self.out_n[x] for x in range(self.n_cls)], dtype=np.int32)
        parts.append(outn.tobytes())
        for x in range(self.n_cls):
            if self.out_n[x]:
                parts.append((<char*>self.out_e[x])[:8 * self.out_n[x]])
        return b"".join(parts)

    @staticmethod
    def load(const unsigned char[::1] data):
        """A Core from dump()'s bytes; raises ValueError on anything malformed."""
        cdef int64_t off = len(_SNAP_MAGIC), nb, x, n
        cdef int i, w, f
        cdef Core core
        if data.shape[0] < off + _SNAP_HEADER * 8 or bytes(data[:off]) != _SNAP_MAGIC:
            raise ValueError("not a lockfleet core snapshot")
        h = np.frombuffer(bytes(data[off:off + _SNAP_HEADER * 8]), dtype=np.int64).tolist()
        off += _SNAP_HEADER * 8
        if not 1 <= h[0] <= 1024 or h[27] < 0 or h[28] < 16 or h[31] < 1:
            raise ValueError("corrupt core snapshot header")
        core = Core(int(h[0]), int(h[28]), int(h[31]))
        core.n_sk = h[27]
        core.chain_flushes, core.threads_dropped = h[29:31]
        (core.n_cls, core.n_thr, core.n_occ, core.n_edge, core.n_pair, core.n_chain,
         core.n_ce, core.n_ei) = h[1:9]
        core.arrival_seq = <uint32_t>h[9]
        core.any_safe = bool(h[10])
        (core.events, core.acquires, core.releases, core.depth_overflows, core.chain_hits,
         core.chain_misses, core.recomputes, core.reorders, core.searches,
         core.search_budget_exhausted) = h[11:21]
        core.n_inv, n = h[21], h[22]
        core.any_rread = bool(h[23])
        core.witnesses, core.witness_budget_exhausted, core.inversions_untracked = h[24:27]
        if min(h[1:9]) < 0 or not 0 <= core.n_inv or not 0 <= n <= MAX_WORDS:
            raise ValueError("corrupt core snapshot header")
        # every saved family sized to its count (classes first: the reach words follow them)
        for f in (FAM_CLS, FAM_THR, FAM_OCC, FAM_EDGE, FAM_EI, FAM_PAIR, FAM_INV, FAM_CHAIN, FAM_CE, FAM_SK):
            if core._grow_family(f, max(core.fam_n[f][0], 1)):
                raise MemoryError()
        for w in range(n):
            if core._new_word():
                raise MemoryError()
        for i in range(core.n_arrays):
            if not core.arrays[i].snap:
                continue
            nb = core.arrays[i].elem * core.fam_n[core.arrays[i].fam][0]
            if off + nb > data.shape[0]:
                raise ValueError("truncated core snapshot")
            if nb:
                memcpy(core.arrays[i].ptr[0], &data[off], nb)
            off += nb
        n = core.n_cls
        if off + 4 * n > data.shape[0]:
            raise ValueError("truncated core snapshot")
        outn_a = np.frombuffer(bytes(data[off:off + 4 * n]), dtype=np.int32)
        off += 4 * n
        cdef const int32_t[::1] outn = outn_a
        for x in range(n):
            core.out_n[x] = core.out_c[x] = outn[x]
            if outn[x] < 0:
                raise ValueError("corrupt core snapshot adjacency")
            if outn[x]:
                nb = 8 * outn[x]
                if off + nb > data.shape[0]:
                    raise ValueError("truncated core snapshot")
                core.out_e[x] = <int32_t*>malloc(nb)
                if core.out_e[x] == NULL:
                    raise MemoryError()
                memcpy(core.out_e[x], &data[off], nb)
                off += nb
        if off != data.shape[0]:
            raise ValueError("trailing bytes in core snapshot")
        for x in range(core.n_edge):
            if core.e_sketch[x] >= core.n_sk or core.e_hosts[x] >= core.n_pair:
                raise ValueError("corrupt core snapshot: a dependency's hosts point past their tables")
        core._rebuild_indexes()
        if core.oom:
            raise MemoryError()
        return core

    cdef void _rebuild_indexes(self) noexcept nogil:
        cdef int64_t i, c = 4096, j
        cdef uint64_t key
        for i in range(self.n_cls):
            u64map_put(&self.cls_map, ((<uint64_t>self.cls_name[i]) << 8) | <uint64_t>self.cls_sub[i] | TOP,
                       <int32_t>i)
        for i in range(self.n_thr):
            key = mix64(mix64(<uint64_t>self.thr_tid[i]) ^ (<uint64_t>self.thr_host[i] * <uint64_t>0x9e3779b97f4a7c15)) | 1
            u64map_put_h(&self.thr_map, key, key, <int32_t>i, True)
        for i in range(self.n_edge):
            pairidx_add(&self.edge_idx, self.e_src, self.e_dst, <int32_t>i)
        while c * 3 < 4 * (self.n_chain + 1):
            c <<= 1
        free(self.chain_slots)
        self.chain_slots = <int32_t*>malloc(c * 4)
        if self.chain_slots == NULL:
            self.oom = True
            return
        memset(self.chain_slots, 0xff, c * 4)
        self.chain_mask = c - 1
        for i in range(self.n_ei):
            u64map_put(&self.inst_map, <uint64_t>self.ei_edge[i] | TOP, <int32_t>i)
        for i in range(self.n_inv):
            u64map_put(&self.inv_map, <uint64_t>self.inv_edge[i] | TOP, <int32_t>i)
        if self.n_inv and _build_in(self):
            self.oom = True
        for i in range(self.n_chain):
            j = <int64_t>(self.chains[i].key & <uint64_t>self.chain_mask)
            while self.chain_slots[j] >= 0:
                j = (j + 1) & self.chain_mask
            self.chain_slots[j] = <int32_t>i
        self.counts_dirty = True


include "graph.pxi"

