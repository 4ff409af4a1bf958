# Declarations of the lockdep core (_core.pyx, graph.pxi): every constant, record and array of
# `Core`, once, with what it holds.
#
# Arrays come in families: the arrays of a family are indexed alike (by class, edge, thread, ...),
# share one count and one capacity, and grow together. Each array is declared here once and
# registered once in `Core._declare()` (family, element size, whether snapshots carry it); from
# that one table the core derives its allocation (`_grow_family`), its release (`__dealloc__`),
# its snapshots (`dump`/`load`) and its memory accounting (`memory_breakdown`). Hash indexes and the
# per-class adjacency lists are derived state: rebuilt on load, freed and counted by `_free_indexes`
# and `_index_bytes`.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

from hashmap cimport U64Map, PairIndex


# finding kinds, as the engine names them (engine._F_KIND)
cdef enum Finding:
    F_CIRCULAR = 1
    F_RECURSIVE = 2
    F_BAD_UNLOCK = 3
    F_IRQ_INVERSION = 4
    F_INCONSISTENT = 5
    F_WITNESS = 6           # a later cycle through a known inversion, kept with its evidence

# edge kinds (bit index into e_kinds): held exclusive/shared x taken non-recursive/recursive-read
cdef enum EdgeKind:
    K_EN = 0
    K_ER = 1
    K_SN = 2
    K_SR = 3

# masks over edge kinds
cdef enum KindMask:
    KM_E = 3                # EN | ER: kinds whose held side is exclusive
    KM_N = 5                # EN | SN: kinds whose taken side is not a recursive read

# e_flags bits
cdef enum EdgeFlag:
    EF_INV = 1              # the dependency is an inversion: its arrival closed a strong cycle of the order
    EF_HOLD = 2             # within one batch's recomputation: a dependency not yet in the order
    EF_OUT = 3              # EF_INV | EF_HOLD: not part of the order the levels are kept over

# cls_flags bits
cdef enum ClassFlag:
    CF_INCONSISTENT_HARD = 1    # inconsistent_state already reported for hardirq
    CF_INCONSISTENT_SOFT = 2    # ... for softirq
    CF_IRQ_CHECKED_HARD = 4     # irq_inversion already checked (reported) for hardirq
    CF_IRQ_CHECKED_SOFT = 8     # ... for softirq
    CF_USAGE_CHANGED = 16       # in this batch's uc_cls list

# cls_usage bits: 4 per irq kind x (hardirq 0, softirq 1) at 4x + (IN-W 0, IN-R 1, ON-W 2, ON-R 3)
cdef enum UsageBit:
    U_IN_W = 0              # taken (exclusive) in irq context x
    U_IN_R = 1              # taken shared in irq context x
    U_ON_W = 2              # taken (exclusive) with irq x enabled
    U_ON_R = 3              # taken shared with irq x enabled
    USAGE_IN_ANY = 0x33     # IN-W | IN-R of both irq kinds: the class is irq-safe somewhere

# search restrictions (graph.pxi): none, one component, a level ceiling, a witness's region
cdef enum Restriction:
    R_NONE = 0
    R_COMP = 1
    R_LEVEL = 2
    R_WIT = 3

# bounds
cdef enum Bound:
    DFS_BUDGET = 2000000        # edge steps of the exhaustive simple-path search
    WITNESS_BUDGET = 1000000    # edge steps of one witness search
    RECOMPUTE_AT = 48           # a batch with more disagreeing arrivals than this ...
    RECOMPUTE_RATIO = 64        # ... and more than (classes + edges) / this recomputes the order
    WITNESS_KEEP = 8            # witnesses each inversion keeps with their evidence
    MAX_WORDS = 8               # reach words: the first 64 * MAX_WORDS inversions are tracked
    TCACHE = 256                # entries of the row loop's recent-thread cache (a power of two)
    MAX_ARRAYS = 160            # entries of the array table (declared arrays + 2 * MAX_WORDS)
    OV_KEEP = 64                # depth overflows reported per batch

# hosts of a dependency (_edge): the first exact_hosts (default HOST_EXACT) are named (e_host0
# inline, the rest in the pair pool); the others are counted by a HyperLogLog of HLL_M one-byte
# registers (FAM_SK), allocated only for a dependency that passes them (standard error
# 1.04 / sqrt(HLL_M) = 9.2%). Offline merges of a few machines' files name more.
cdef enum HostSketch:
    HOST_EXACT = 8
    HLL_BITS = 7                # the low bits of a host's hash pick the register
    HLL_M = 128                 # 1 << HLL_BITS registers

# bounded tables: the chain cache's default bound (lockdep's MAX_LOCKDEP_CHAINS: when full it is
# emptied, its counts folded into the dependencies, and a chain met again is validated again);
# the thread table is compacted (threads with an empty held stack dropped) at a batch's end once it
# holds THREAD_SWEEP_MIN threads and twice as many as after the last compaction
cdef enum TableBound:
    MAX_CHAINS_DEFAULT = 1048576
    THREAD_SWEEP_MIN = 256

# array families: what an array is indexed by (its count and capacity)
cdef enum:  # Family
    FAM_CLS = 0         # by class: n_cls / cap_cls
    FAM_WORDS           # reach words, by class (same count and capacity as FAM_CLS)
    FAM_THR             # by thread: n_thr / cap_thr (the held stacks: max_depth slots a thread)
    FAM_OCC             # by occurrence: n_occ / cap_occ
    FAM_EDGE            # by dependency: n_edge / cap_edge
    FAM_EI              # lock instances of dependencies: n_ei / cap_ei
    FAM_PAIR            # (dependency, host) pairs past a dependency's first host: n_pair / cap_pair
    FAM_INV             # by inversion: n_inv / cap_inv
    FAM_CHAIN           # by chain: n_chain / cap_chain
    FAM_CE              # chains' dependency lists: n_ce / cap_ce
    FAM_AR              # this batch's arrivals: n_ar / cap_ar
    FAM_UC              # this batch's classes whose usage changed: n_uc / cap_uc
    FAM_F               # this batch's findings: n_f / cap_f
    FAM_FH              # their held locks: n_fh / cap_fh
    FAM_FP              # their paths: n_fp / cap_fp
    FAM_SCRATCH         # search scratch by (class, state): cap_scratch / cap_scratch
    FAM_PATH            # the path a search found: path_n / cap_path
    FAM_WL              # irq propagation's worklist: n_wl / cap_wl
    FAM_DEPTH           # re-acquisition scratch, by stack depth: max_depth / max_depth
    FAM_SK              # host sketches (HLL_M registers each): n_sk / cap_sk
    N_FAMILIES


cdef struct Array:
    # one array of the core, in the array table
    void** ptr          # where its pointer lives (a field of Core)
    size_t elem         # bytes per element
    int fam             # its Family: the count and capacity it is sized by
    bint snap           # carried in snapshots (else derived or per-batch state)
    bint zero           # newly grown elements are zeroed


cdef struct Chain:
    # one validated held-lock stack (lockdep's lock_chain), 24 bytes
    uint64_t key        # the chain key (a hash), nonzero
    uint64_t count      # times this exact stack was taken
    uint32_t last_s     # when last taken, in seconds: "last seen" needs no finer grain
    int32_t edges       # -1 none; >= 0 the one dependency it made; <= -2: -(offset + 2) into ce_edge


cdef struct Held:
    # one held lock of a thread's stack (lockdep's held_lock), 48 bytes: a push or a lookup
    # touches one cache line however many threads interleave
    uint64_t key        # the chain key of the stack up to and including this lock
    uint64_t inst       # lock instance, 0 unknown
    int64_t ts          # when it was taken
    int32_t cls         # its class
    int32_t name        # its name id (a release matches names: it carries no subclass)
    int32_t site        # where it was taken (site id, -1 unknown)
    int32_t task        # task name id, -1 unknown
    uint8_t mode        # 0 exclusive, 1 shared, 2 recursive read
    uint8_t trylock     # taken by a trylock
    uint8_t irq         # the irq column at the acquisition


cdef class Core:
    # ---- configuration
    cdef int32_t max_depth          # held-stack slots per thread (lockdep's MAX_LOCK_DEPTH)
    cdef int64_t depth_n            # = max_depth: FAM_DEPTH's count and capacity
    # irq rule for reads: 0 = lockdep since 5.10 (usage_match with the exclusive mask: every
    # IN/ON pair conflicts, a read's bits drop out where the path holds it shared or takes it as a
    # recursive read); 1 = lockdep before 5.10 (reads conflict only with writes)
    cdef public uint8_t irq_rule_pre510
    cdef bint oom                   # an allocation failed: the batch is refused with MemoryError

    # ---- the array table (see _declare)
    cdef Array arrays[MAX_ARRAYS]
    cdef int n_arrays
    cdef int64_t* fam_n[N_FAMILIES]     # each family's count ...
    cdef int64_t* fam_cap[N_FAMILIES]   # ... and capacity

    # ---- classes (FAM_CLS)
    cdef int64_t n_cls, cap_cls
    cdef int32_t* cls_name          # name id (engine's lock interner)
    cdef uint8_t* cls_sub           # subclass
    cdef uint8_t* cls_usage         # irq usage bits: 4 per irq kind (IN-W, IN-R, ON-W, ON-R)
    cdef uint8_t* cls_flags         # ClassFlag bits
    cdef uint8_t* cls_reach         # irq reach bits (graph.pxi: X * 4 + w * 2 + st)
    cdef int32_t* cls_usage_occ     # 8 per class: the occurrence that first set each usage bit
    cdef int32_t* rep               # the class's component (its representative class)
    cdef int32_t* lvl               # a component's level (valid at rep): order edges climb
    cdef int32_t* mnext             # next member of the same component, -1 last
    cdef int32_t** out_e            # out-adjacency: (target class, edge) pairs
    cdef int32_t* out_n             # ... entries used
    cdef int32_t* out_c             # ... entries allocated
    cdef int32_t* mark_a            # search marks (generation stamps)
    cdef int32_t* mark_b
    cdef int32_t* in0_n             # order (non-inversion) dependencies into the class
    cdef int32_t* out0_n            # order dependencies out of the class
    cdef int32_t** in_e             # in-adjacency (edge ids), built at the first inversion
    cdef int32_t* in_n              # ... entries used
    cdef int32_t* in_c              # ... entries allocated
    cdef bint have_in               # in_e is built
    cdef int64_t in_upto            # edges below this were added to in_e when it was built
    cdef U64Map cls_map             # (name << 8 | subclass) | TOP -> class

    # ---- reach words of the first MAX_WORDS * 64 inversions (FAM_WORDS): bit j of dw[w][c] is set
    # when inversion 64w+j's taken class reaches c (c included); of aw[w][c], when c reaches its held class
    cdef int32_t n_words
    cdef uint64_t* dw[MAX_WORDS]
    cdef uint64_t* aw[MAX_WORDS]

    # ---- threads and their held stacks (FAM_THR)
    cdef int64_t n_thr, cap_thr
    cdef int32_t* thr_host          # host id
    cdef int64_t* thr_tid           # thread id on that host
    cdef int32_t* thr_depth         # locks held
    cdef int32_t* thr_over          # acquisitions past max_depth not tracked (released silently)
    cdef uint64_t* thr_seed         # the chain key of an empty stack (a hash of the host)
    cdef Held* st                   # max_depth slots per thread: slot th * max_depth + depth
    cdef U64Map thr_map             # hash of (host, tid) -> thread
    # recent threads, direct-mapped by (host, tid): tc_th -1 empty (derived; not in snapshots)
    cdef int32_t tc_th[TCACHE]
    cdef int64_t tc_tid[TCACHE]

    # ---- occurrences: one acquisition or release, kept as evidence (FAM_OCC)
    cdef int64_t n_occ, cap_occ
    cdef int32_t* oc_cls            # class
    cdef int32_t* oc_site           # site id, -1 unknown
    cdef int32_t* oc_host           # host id
    cdef int32_t* oc_task           # task name id, -1 unknown
    cdef int64_t* oc_tid            # thread id
    cdef int64_t* oc_ts             # time (ns)
    cdef uint64_t* oc_inst          # lock instance, 0 unknown
    cdef uint8_t* oc_mode           # 0 exclusive, 1 shared, 2 recursive read
    cdef uint8_t* oc_try            # a trylock
    cdef uint8_t* oc_irq            # the irq column

    # ---- dependencies (FAM_EDGE)
    cdef int64_t n_edge, cap_edge
    cdef int32_t* e_src             # held class
    cdef int32_t* e_dst             # taken class
    cdef uint8_t* e_kinds           # EdgeKind bits seen
    cdef uint8_t* e_flags           # EdgeFlag bits
    cdef uint8_t* e_bkinds          # kinds that arrived in the current batch ...
    cdef int32_t* e_bfirst          # ... and the first of their arrivals (ar_next links the rest)
    # first evidence, inline (host = e_host0)
    cdef int32_t* ev_task           # the taken lock's task
    cdef int64_t* ev_ts             # ... time
    cdef int32_t* ev_site_h         # the held lock's site
    cdef int32_t* ev_site_t         # the taken lock's site
    cdef uint8_t* ev_modes          # mode_t | try_h << 2 | mode_h << 3
    cdef int32_t* e_hosts           # the newest named host past e_host0 (a pair), -1 none
    cdef int32_t* e_host0           # the first host that took it
    cdef uint64_t* e_count          # times taken (derived from the chains: _refresh_counts)
    cdef int64_t* e_last            # last taken (ns; derived likewise)
    cdef uint64_t* e_base           # counts folded in from chains the bounded cache let go
    cdef int32_t* e_sketch          # its host sketch (FAM_SK), -1 none: hosts past the named ones
    cdef PairIndex edge_idx         # (src, dst) -> dependency
    cdef uint32_t arrival_seq       # arrivals numbered in row order, over the core's life
    # lock instances are optional evidence (many agents send none): kept aside (FAM_EI), only for
    # the dependencies that have one, found through inst_map (edge | TOP -> row of ei_*)
    cdef int64_t n_ei, cap_ei
    cdef int32_t* ei_edge           # the dependency
    cdef uint64_t* ei_h             # held lock's instance
    cdef uint64_t* ei_t             # taken lock's instance
    cdef U64Map inst_map
    # named hosts past the first (FAM_PAIR): at most exact_hosts - 1 a dependency, through ph_next
    cdef int64_t n_pair, cap_pair
    cdef int32_t* ph_host           # host id
    cdef int32_t* ph_next           # next pair of the same dependency, -1 last
    cdef int32_t exact_hosts        # hosts a dependency names (the rest: its sketch)
    # host sketches (FAM_SK): HLL_M registers each, at sk_reg + HLL_M * e_sketch[e]
    cdef int64_t n_sk, cap_sk
    cdef uint8_t* sk_reg

    # ---- inversions, in the order they arrived (FAM_INV)
    cdef int64_t n_inv, cap_inv
    cdef int32_t* inv_edge          # the dependency
    cdef uint64_t* inv_wit          # witnesses counted (its own cycle included)
    cdef int32_t* inv_kept          # witnesses kept with their evidence (<= WITNESS_KEEP)
    cdef U64Map inv_map             # edge | TOP -> inversion
    cdef bint any_rread             # some dependency was taken as a recursive read (xR)
    cdef bint superset              # levels hold for more than the order (no O(1) moves)
    cdef int64_t batch_e0           # the first dependency id made by the current batch

    # ---- chains (FAM_CHAIN, FAM_CE)
    cdef int64_t n_chain, cap_chain
    cdef Chain* chains
    cdef int32_t* chain_slots       # open addressing by the key's low bits: chain or -1 (derived)
    cdef int64_t chain_mask
    cdef int64_t n_ce, cap_ce
    cdef int32_t* ce_edge           # a chain's dependencies when it made more than one: count, ids
    cdef bint counts_dirty          # e_count/e_last need _refresh_counts
    cdef int64_t max_chains         # the cache's bound: full, it is emptied (_flush_chains)
    cdef int64_t thr_sweep_at       # the thread count at which the next batch end compacts

    # ---- per batch: arrivals (FAM_AR), classes whose usage changed (FAM_UC), findings (FAM_F ...)
    cdef int64_t n_ar, cap_ar
    cdef int32_t* ar_edge           # the dependency
    cdef uint8_t* ar_kind           # the kind that arrived
    cdef uint8_t* ar_new            # the dependency itself is new
    cdef uint32_t* ar_seq           # its arrival number
    cdef int32_t* ar_next           # the next arrival of the same dependency in this batch
    cdef int32_t* ar_row            # its row
    cdef int64_t n_uc, cap_uc
    cdef int32_t* uc_cls
    cdef int64_t n_f, cap_f
    cdef int32_t* f_kind            # Finding
    cdef int32_t* f_row             # row that raised it
    cdef int32_t* f_a               # kind-specific arguments (engine._record)
    cdef int32_t* f_b
    cdef int32_t* f_c
    cdef int32_t* f_d
    cdef int32_t* f_occ             # its occurrence, -1 none
    cdef int64_t* f_hoff            # held-lock occurrences: offset into fh ...
    cdef int32_t* f_hn              # ... and count
    cdef int64_t* f_poff            # path dependencies: offset into fp ...
    cdef int32_t* f_pn              # ... and count
    cdef int64_t n_fh, cap_fh
    cdef int32_t* fh
    cdef int64_t n_fp, cap_fp
    cdef int32_t* fp
    cdef int64_t n_ov               # depth overflows this batch (the first OV_KEEP kept)
    cdef int32_t ov_host[OV_KEEP]
    cdef int64_t ov_tid[OV_KEEP]

    # ---- search scratch (FAM_SCRATCH, sized to 2 x classes; FAM_PATH; FAM_WL)
    cdef int64_t cap_scratch
    cdef int32_t* vis               # generation stamp per (class, state)
    cdef int32_t* par_e             # BFS parent edge
    cdef uint8_t* par_s             # BFS parent state
    cdef int32_t* queue
    cdef int32_t gen                # current generation
    cdef int32_t* path              # the last path found (edge ids)
    cdef int64_t path_n, cap_path
    cdef int32_t* wl
    cdef int64_t n_wl, cap_wl
    cdef bint any_safe              # some class has an irq-safe usage (irq propagation needed)

    # ---- re-acquisition scratch (FAM_DEPTH): what a release out of order takes again
    cdef int32_t* ra_cls
    cdef int32_t* ra_name
    cdef int32_t* ra_site
    cdef int32_t* ra_task
    cdef uint64_t* ra_inst
    cdef int64_t* ra_ts
    cdef uint8_t* ra_mode
    cdef uint8_t* ra_try
    cdef uint8_t* ra_irq
    cdef int32_t* ra_edges          # dependencies one validation made

    # ---- counters
    cdef public int64_t events, acquires, releases, depth_overflows, chain_hits, chain_misses
    cdef public int64_t recomputes, reorders, searches, search_budget_exhausted
    cdef public int64_t witnesses, witness_budget_exhausted, inversions_untracked
    cdef public int64_t search_steps, spread_steps    # edges looked at by searches, by reach spreads
    cdef public int64_t chain_flushes, threads_dropped

    # ---- methods (_core.pyx)
    cdef void _declare(self) noexcept
    cdef void _add_array(self, void** ptr, size_t elem, int fam, bint snap, bint zero) noexcept nogil
    cdef int _grow_family(self, int fam, int64_t cap) noexcept nogil
    cdef void _free_indexes(self) noexcept nogil
    cdef int64_t _index_bytes(self, int fam) noexcept nogil
    cdef int _new_word(self) noexcept nogil
    cdef int _ensure_cls(self, int64_t need) noexcept nogil
    cdef int _ensure_scratch(self) noexcept nogil
    cdef int32_t _class(self, int32_t name, int32_t sub) noexcept nogil
    cdef int32_t _chain_find(self, uint64_t key) noexcept nogil
    cdef int _chain_index(self, int32_t ci) noexcept nogil
    cdef int32_t _thread(self, int32_t host, int64_t tid) noexcept nogil
    cdef int32_t _occ(self, int32_t cls, uint8_t mode, uint8_t trylock, uint64_t inst, int32_t site,
                      int32_t host, int32_t task, int64_t tid, int64_t ts, uint8_t irq) noexcept nogil
    cdef int32_t _held_occ(self, int32_t th, int64_t slot) noexcept nogil
    cdef int _finding(self, int32_t kind, int32_t row, int32_t a, int32_t b, int32_t c, int32_t d,
                      int32_t occ, int32_t th) noexcept nogil
    cdef int _push_i32(self, int32_t** arr, int64_t* n, int64_t* cap, int32_t v) noexcept nogil
    cdef int32_t _edge(self, int32_t src, int32_t dst, int k, int32_t th, int64_t slot,
                       int32_t cls, uint8_t mode, uint64_t inst, int32_t site, int32_t task,
                       int64_t ts, uint8_t irq, int32_t row) noexcept nogil
    cdef int _add_instances(self, int32_t e, uint64_t held, uint64_t taken) noexcept nogil
    cdef int _sketch_add(self, int32_t e, int32_t host) noexcept nogil
    cdef void _flush_chains(self) noexcept nogil
    cdef void _sweep_threads(self) noexcept nogil
    cdef void _mark_usage(self, int32_t c, uint8_t mode, uint8_t irq, int32_t th, int32_t* occ_t,
                          uint8_t trylock, uint64_t inst, int32_t site, int32_t task, int64_t ts,
                          int32_t row) noexcept nogil
    cdef int32_t _validate(self, int32_t th, int32_t c, uint8_t mode, uint8_t trylock, uint8_t irq,
                           uint64_t inst, int32_t site, int32_t task, int64_t ts, int32_t row,
                           uint64_t key, bint reacquire) noexcept nogil
    cdef void _acquire(self, int32_t th, int32_t c, int32_t name, uint8_t mode, uint8_t trylock,
                       uint8_t irq, uint64_t inst, int32_t site, int32_t task, int64_t ts,
                       int32_t row, bint reacquire, uint64_t times) noexcept nogil
    cdef void _release(self, int32_t th, int32_t name, int32_t sub, uint64_t inst, int32_t site,
                       int32_t task, int64_t ts, uint8_t irq, int32_t row) noexcept nogil
    cdef int _run(self, Py_ssize_t n, const int64_t* ts, const int64_t* tid, const uint8_t* op,
                  const int32_t* lk, const int32_t* lk_map, int32_t* cls_cache,
                  const uint8_t* mode, const uint8_t* sub, const uint64_t* inst, const uint8_t* irq,
                  const int32_t* site, const int32_t* site_map, const int32_t* task,
                  const int32_t* task_map, const int32_t* host, const int32_t* host_map,
                  const uint64_t* count, int32_t default_host) noexcept nogil
    cdef void _count_edge(self, int32_t e, int64_t ci) noexcept nogil
    cdef void _refresh_counts(self) noexcept nogil
    cdef void _rebuild_indexes(self) noexcept nogil
