# The class graph of _core.pyx, run once per batch on that batch's arrivals: adjacency, the
# topological order of strongly connected components, the strong-cycle search, irq reachability.
#
# Order: every component r has a level lvl[r], and an edge between components climbs: lvl[A] <
# lvl[B] for A -> B (a pseudo-topological numbering, as the levels of Bender, Fineman, Gilbert and
# Tarjan, "A new approach to incremental cycle detection", 2016, kept here as longest-path depths).
# An arrival u -> v that climbs needs no search. One that does not lifts v above u and pushes
# the lift forward; levels only grow and are bounded by the depth of the graph, so on the layered
# graphs lock orders form the total work stays near linear. If the lift comes back to u the plain
# graph has a new cycle: components must merge, and a Tarjan pass over the whole graph rebuilds
# components and levels in O(V + E). That pass is also used directly for a batch that disagrees
# in many places (a first load, a burst of new code paths), where one linear pass beats many lifts.
#
# Strong search (lockdep's check_noncircular with the read/write rules of lockdep-design.rst):
# breadth-first over (class, state) where state R means "the path so far ends in a recursive-read
# acquisition" (-(xR)->), from which only -(Ex)-> may follow. Unlike the kernel's __bfs, a class is
# visited once per state, not once overall, so no strong cycle is missed. N dominates R (every
# continuation allowed from R is allowed from N), so reaching a class in N makes R moot.

cdef int _adj_add(int32_t** lst, int32_t* n, int32_t* cap, int32_t node, int32_t e) noexcept nogil:
    # entries are (neighbour, edge) pairs: the order and component searches read only the
    # neighbour, from the same cache line, instead of chasing the edge table
    cdef int32_t c
    if n[0] == cap[0]:
        c = cap[0] * 2 if cap[0] else 2
        if _grow(<void**>lst, c, 8):
            return -1
        cap[0] = c
    lst[0][2 * n[0]] = node
    lst[0][2 * n[0] + 1] = e
    n[0] += 1
    return 0


cdef inline int32_t _next_gen(Core self) noexcept nogil:
    if self.gen >= 0x3ffffff0:
        memset(self.vis, 0, self.cap_scratch * 4)
        memset(self.mark_a, 0, self.cap_cls * 4)
        memset(self.mark_b, 0, self.cap_cls * 4)
        self.gen = 0
    self.gen += 1
    return self.gen


cdef inline uint8_t _kinds_at(Core self, int32_t e, uint32_t tlim) noexcept nogil:
    """The kinds of edge e that had arrived by arrival number tlim: all of them, but for kinds
    that arrived later in this same batch."""
    cdef uint8_t b = self.e_bkinds[e], km
    cdef int32_t i
    if not b:
        return self.e_kinds[e]
    km = self.e_kinds[e] & ~b
    i = self.e_bfirst[e]
    while i >= 0:
        if self.ar_seq[i] <= tlim:
            km |= <uint8_t>(1 << self.ar_kind[i])
        i = self.ar_next[i]
    return km


cdef int _path_push(Core self, int32_t e) noexcept nogil:
    if self.path_n + 1 > self.cap_path and self._grow_family(FAM_PATH, max(self.cap_path * 2, 64)):
        return -1
    self.path[self.path_n] = e
    self.path_n += 1
    return 0


cdef int _trace_back(Core self, int32_t end2, int32_t start2) noexcept nogil:
    """Fill self.path with the BFS tree's edges from state start2 to state end2, in order."""
    cdef int32_t cur = end2, e, i, j, tmp
    self.path_n = 0
    while cur != start2:
        e = self.par_e[cur]
        if e < 0:
            break
        if self.path_n > 2 * self.n_cls or _path_push(self, e):
            return -1           # a BFS tree path is never longer: guard, not a case
        cur = self.e_src[e] * 2 + self.par_s[cur]
    i = 0
    j = <int32_t>self.path_n - 1
    while i < j:
        tmp = self.path[i]
        self.path[i] = self.path[j]
        self.path[j] = tmp
        i += 1
        j -= 1
    return 0


cdef int _path_is_simple(Core self) noexcept nogil:
    cdef int32_t g = _next_gen(self), x
    cdef int64_t i
    if self.path_n == 0:
        return 1
    self.mark_a[self.e_src[self.path[0]]] = g
    for i in range(self.path_n):
        x = self.e_dst[self.path[i]]
        if self.mark_a[x] == g:
            return 0
        self.mark_a[x] = g
    return 1


cdef inline bint _present(Core self, int32_t e, uint32_t tlim) noexcept nogil:
    """Had dependency e arrived by arrival number tlim? (Only pairs made in this batch, ids from
    batch_e0 on, can say no.)"""
    return e < self.batch_e0 or self.e_bkinds[e] == 0 or _kinds_at(self, e, tlim) != 0


cdef inline int32_t _bits_meet(Core self, int32_t y, int32_t x) noexcept nogil:
    """The oldest tracked inversion whose held class y reaches and whose taken class reaches x
    (so that an arrival x -> y closes a cycle through it), or -1."""
    cdef int w
    cdef uint64_t m
    for w in range(self.n_words):
        m = self.aw[w][y] & self.dw[w][x]
        if m:
            return w * 64 + <int32_t>__builtin_ctzll(m)
    return -1


cdef inline bint _allowed(Core self, int32_t y, int rmode, int32_t rarg, int32_t x) noexcept nogil:
    """May a search toward x enter class y? R_COMP: y is in component rarg. R_LEVEL: y's
    component is at level <= rarg (an order path to x cannot climb above x). R_WIT: y can still
    reach x: by the order alone (level <= rarg, x's level), or through an inversion whose held
    class y reaches and whose taken class reaches x. Every restriction only drops classes that
    cannot reach x, so a breadth-first search finds the same path under each of them."""
    if rmode == R_COMP:
        return self.rep[y] == rarg
    if rmode == R_LEVEL:
        return self.lvl[self.rep[y]] <= rarg
    if rmode == R_WIT:
        return self.lvl[self.rep[y]] <= rarg or _bits_meet(self, y, x) >= 0
    return True


cdef int _simple_dfs(Core self, int32_t v, int32_t u, int kclose, uint32_t tlim, int rmode,
                     int32_t rarg, bint skip_inv) noexcept nogil:
    """Exhaustive search for a simple strong path v ~> u (the BFS found only a walk). Bounded by
    DFS_BUDGET edge steps; returns 1 found (in self.path), 0 none, -1 error."""
    cdef int64_t n = self.n_cls + 1, top = 0, budget = DFS_BUDGET, i
    cdef int32_t* s_node = <int32_t*>malloc(n * 4)
    cdef int32_t* s_pos = <int32_t*>malloc(n * 4)
    cdef int32_t* s_edge = <int32_t*>malloc(n * 4)
    cdef uint8_t* s_state = <uint8_t*>malloc(n)
    cdef uint8_t* onpath = <uint8_t*>calloc(n, 1)
    cdef int32_t x, e, y
    cdef uint8_t st, km, nst
    cdef int rc = 0
    if s_node == NULL or s_pos == NULL or s_edge == NULL or s_state == NULL or onpath == NULL:
        rc = -1
    else:
        s_node[0] = v
        s_pos[0] = 0
        s_edge[0] = -1
        s_state[0] = kclose & 1
        onpath[v] = 1
        top = 1
        while top > 0:
            x = s_node[top - 1]
            st = s_state[top - 1]
            if s_pos[top - 1] >= self.out_n[x]:
                onpath[x] = 0
                top -= 1
                continue
            e = self.out_e[x][2 * s_pos[top - 1] + 1]
            s_pos[top - 1] += 1
            budget -= 1
            if budget <= 0:
                self.search_budget_exhausted += 1
                break
            if skip_inv and self.e_flags[e] & EF_INV:
                continue
            y = self.e_dst[e]
            if rmode and not _allowed(self, y, rmode, rarg, u):
                continue
            km = _kinds_at(self, e, tlim)
            if st:
                km &= KM_E
            if not km:
                continue
            nst = 0 if (km & KM_N) else 1
            if y == u:
                if nst == 0 or kclose < 2:
                    self.path_n = 0
                    for i in range(1, top):
                        if _path_push(self, s_edge[i]):
                            rc = -1
                            break
                    if rc == 0 and _path_push(self, e):
                        rc = -1
                    if rc == 0:
                        rc = 1
                    break
                continue
            if onpath[y]:
                continue
            onpath[y] = 1
            s_node[top] = y
            s_pos[top] = 0
            s_edge[top] = e
            s_state[top] = nst
            top += 1
    free(s_node)
    free(s_pos)
    free(s_edge)
    free(s_state)
    free(onpath)
    return rc


cdef int _strong_path(Core self, int32_t v, int32_t u, int kclose, uint32_t tlim, int rmode,
                      int32_t rarg, bint skip_inv, int64_t budget) noexcept nogil:
    """Is there a strong path v ~> u that the arrival u -(kclose)-> v closes into a strong cycle,
    using kinds arrived by tlim, classes the restriction allows, and (skip_inv) no inversion?
    1 yes (path in self.path), 0 no, -1 error, -2 gave up after `budget` edge steps (< 0: none)."""
    cdef int32_t g = _next_gen(self), x2, x, y, y2, e, st0 = kclose & 1
    cdef int64_t qh = 0, qt = 0, i
    cdef uint8_t st, km, nst
    cdef bint accept_r = kclose < 2
    self.searches += 1
    self.queue[qt] = v * 2 + st0
    qt += 1
    self.vis[v * 2 + st0] = g
    self.par_e[v * 2 + st0] = -1
    while qh < qt:
        x2 = self.queue[qh]
        qh += 1
        x = x2 >> 1
        st = x2 & 1
        self.search_steps += self.out_n[x]
        if budget >= 0:
            budget -= self.out_n[x] + 1
            if budget < 0:
                return -2
        for i in range(self.out_n[x]):
            e = self.out_e[x][2 * i + 1]
            if skip_inv and self.e_flags[e] & EF_INV:
                continue
            y = self.e_dst[e]
            if rmode and not _allowed(self, y, rmode, rarg, u):
                continue
            km = _kinds_at(self, e, tlim)
            if st:
                km &= KM_E
            if not km:
                continue
            nst = 0 if (km & KM_N) else 1
            y2 = y * 2 + nst
            if self.vis[y2] == g or (nst == 1 and self.vis[y * 2] == g):
                continue
            self.vis[y2] = g
            self.par_e[y2] = e
            self.par_s[y2] = st
            if y == u and (nst == 0 or accept_r):
                if _trace_back(self, y2, v * 2 + st0):
                    return -1
                if _path_is_simple(self):
                    return 1
                return _simple_dfs(self, v, u, kclose, tlim, rmode, rarg, skip_inv)
            self.queue[qt] = y2
            qt += 1
    return 0


cdef int _plain_bfs(Core self, int32_t a, int32_t b) noexcept nogil:
    """Shortest path a ~> b over dependencies of any kind; 1 found (self.path), 0 none."""
    cdef int32_t g, x, y, e
    cdef int64_t qh = 0, qt = 0, i
    if self._ensure_scratch():
        return -1
    g = _next_gen(self)
    self.queue[qt] = a * 2
    qt += 1
    self.vis[a * 2] = g
    self.par_e[a * 2] = -1
    while qh < qt:
        x = self.queue[qh] >> 1
        qh += 1
        for i in range(self.out_n[x]):
            e = self.out_e[x][2 * i + 1]
            y = self.e_dst[e]
            if self.vis[y * 2] == g:
                continue
            self.vis[y * 2] = g
            self.par_e[y * 2] = e
            self.par_s[y * 2] = 0
            if y == b:
                return 0 if _trace_back(self, b * 2, a * 2) else 1
            self.queue[qt] = y * 2
            qt += 1
    return 0


cdef int _raise(Core self, int32_t ru, int32_t rv) noexcept nogil:
    """A new order edge from component ru to rv with lvl[ru] >= lvl[rv]: lift rv above ru and
    push the lift forward until every order edge climbs again. 1: the lift came back to ru, so
    the edge closes a cycle of components, or it outgrew its budget (levels are then left
    inconsistent: the caller recomputes); 0: done."""
    cdef int64_t sp = 0, work = 0
    # a lift that grows past half the graph costs about what recomputing it does: give up and
    # let the caller recompute
    cdef int64_t budget = max(<int64_t>4096, (self.n_cls + self.n_edge) // 2)
    cdef int32_t r, m, y, lv, j
    self.reorders += 1
    self.lvl[rv] = self.lvl[ru] + 1
    self.queue[sp] = rv
    sp += 1
    while sp > 0:
        sp -= 1
        r = self.queue[sp]
        lv = self.lvl[r]
        m = r
        while m >= 0:
            work += self.out_n[m] + 1
            if work > budget:
                return 1
            for j in range(self.out_n[m]):
                if self.e_flags[self.out_e[m][2 * j + 1]] & EF_OUT:
                    continue
                y = self.rep[self.out_e[m][2 * j]]
                if y == ru:
                    return 1
                if y != r and self.lvl[y] <= lv:
                    self.lvl[y] = lv + 1
                    if sp >= self.cap_scratch:
                        return 1    # cannot happen in a DAG of components; recompute to be safe
                    self.queue[sp] = y
                    sp += 1
            m = self.mnext[m]
    return 0


cdef int _tarjan(Core self) noexcept nogil:
    """Rebuild the order's components (rep, member lists) and their levels from scratch, over
    every dependency but the inversions: Tarjan's algorithm, iterative. Components complete in
    reverse topological order."""
    cdef int64_t n = self.n_cls, idx = 0, sp = 0, cp = 0, ncomp = 0, s
    cdef int32_t* index = <int32_t*>malloc(n * 4 + 4)
    cdef int32_t* low = <int32_t*>malloc(n * 4 + 4)
    cdef int32_t* stk = <int32_t*>malloc(n * 4 + 4)
    cdef int32_t* cs_node = <int32_t*>malloc(n * 4 + 4)
    cdef int32_t* cs_pos = <int32_t*>malloc(n * 4 + 4)
    cdef uint8_t* onst = <uint8_t*>calloc(n + 1, 1)
    cdef int32_t x, y, w, p, head
    if index == NULL or low == NULL or stk == NULL or cs_node == NULL or cs_pos == NULL or onst == NULL:
        free(index); free(low); free(stk); free(cs_node); free(cs_pos); free(onst)
        self.oom = True
        return -1
    self.recomputes += 1
    for s in range(n):
        index[s] = -1
    for s in range(n):
        if index[s] >= 0:
            continue
        index[s] = low[s] = <int32_t>idx
        idx += 1
        stk[sp] = <int32_t>s
        sp += 1
        onst[s] = 1
        cs_node[0] = <int32_t>s
        cs_pos[0] = 0
        cp = 1
        while cp > 0:
            x = cs_node[cp - 1]
            if cs_pos[cp - 1] < self.out_n[x]:
                y = self.out_e[x][2 * cs_pos[cp - 1]]
                p = self.out_e[x][2 * cs_pos[cp - 1] + 1]
                cs_pos[cp - 1] += 1
                if self.e_flags[p] & EF_OUT:
                    continue
                if index[y] < 0:
                    index[y] = low[y] = <int32_t>idx
                    idx += 1
                    stk[sp] = y
                    sp += 1
                    onst[y] = 1
                    cs_node[cp] = y
                    cs_pos[cp] = 0
                    cp += 1
                elif onst[y] and index[y] < low[x]:
                    low[x] = index[y]
                continue
            cp -= 1
            if cp > 0:
                p = cs_node[cp - 1]
                if low[x] < low[p]:
                    low[p] = low[x]
            if low[x] == index[x]:
                head = -1
                while True:
                    sp -= 1
                    w = stk[sp]
                    onst[w] = 0
                    self.rep[w] = x
                    if w != x:
                        self.mnext[w] = head
                        head = w
                    if w == x:
                        break
                self.mnext[x] = head
                stk[n - 1 - ncomp] = x   # components fill the stack's free end, sources last
                ncomp += 1
    # levels: longest path over components, in topological order (reverse completion order)
    for s in range(n - ncomp, n):
        self.lvl[stk[s]] = 0
    for s in range(n - ncomp, n):
        x = stk[s]
        w = x
        while w >= 0:
            for p in range(self.out_n[w]):
                if self.e_flags[self.out_e[w][2 * p + 1]] & EF_OUT:
                    continue
                y = self.rep[self.out_e[w][2 * p]]
                if y != x and self.lvl[y] <= self.lvl[x]:
                    self.lvl[y] = self.lvl[x] + 1
            w = self.mnext[w]
    free(index); free(low); free(stk); free(cs_node); free(cs_pos); free(onst)
    return 0


# ---------------------------------------------------------------------- inversions and witnesses
# An arrival that closes a strong cycle of the order (the dependencies that are not inversions)
# is an inversion: a finding. One that closes a strong cycle only through inversions is a witness
# of the oldest inversion on the cycle found: counted, and kept with its cycle while that
# inversion has fewer than WITNESS_KEEP. Whether an arrival x -> y can close a cycle through
# inversion i is a test of two bits: the reach words say whether y reaches i's held class and
# i's taken class reaches x, over every dependency (inversions included). The words only grow
# (each class gains each bit once), so keeping them costs O(V + E) per tracked inversion over the
# whole stream; a witness search runs only where the bits say a cycle exists.

cdef int _in_add(Core self, int32_t v, int32_t e) noexcept nogil:
    cdef int32_t c
    if self.in_n[v] == self.in_c[v]:
        c = self.in_c[v] * 2 if self.in_c[v] else 2
        if _grow(<void**>&self.in_e[v], c, 4):
            self.oom = True
            return -1
        self.in_c[v] = c
    self.in_e[v][self.in_n[v]] = e
    self.in_n[v] += 1
    return 0


cdef int _build_in(Core self) noexcept nogil:
    """The edges into each class, for the reach words' backward half: built at the first
    inversion from the edge table (every dependency made so far, arrived or not: _present
    filters); later dependencies are added at their arrival."""
    cdef int64_t e
    for e in range(self.n_edge):
        if _in_add(self, self.e_dst[e], <int32_t>e):
            return -1
    self.in_upto = self.n_edge
    self.have_in = True
    return 0


cdef int _spread(Core self, int32_t start, int w, uint64_t bits, bint fwd, uint32_t tlim) noexcept nogil:
    """Add `bits` to word w of start's reach (fwd: dw, forward along dependencies; else aw,
    backward) and carry every bit a class gains on to its neighbours."""
    cdef uint64_t* word = self.dw[w] if fwd else self.aw[w]
    cdef int32_t z, y, e
    cdef int64_t j
    cdef uint64_t nb
    if not (bits & ~word[start]):
        return 0
    word[start] |= bits
    self.n_wl = 0
    if self._push_i32(&self.wl, &self.n_wl, &self.cap_wl, start):
        return -1
    while self.n_wl > 0:
        self.n_wl -= 1
        z = self.wl[self.n_wl]
        self.spread_steps += self.out_n[z] if fwd else self.in_n[z]
        if fwd:
            for j in range(self.out_n[z]):
                e = self.out_e[z][2 * j + 1]
                y = self.out_e[z][2 * j]
                nb = word[z] & ~word[y]
                if nb and _present(self, e, tlim):
                    word[y] |= nb
                    if self._push_i32(&self.wl, &self.n_wl, &self.cap_wl, y):
                        return -1
        else:
            for j in range(self.in_n[z]):
                e = self.in_e[z][j]
                y = self.e_src[e]
                nb = word[z] & ~word[y]
                if nb and _present(self, e, tlim):
                    word[y] |= nb
                    if self._push_i32(&self.wl, &self.n_wl, &self.cap_wl, y):
                        return -1
    return 0


cdef int _spread_edge(Core self, int32_t e, uint32_t tlim) noexcept nogil:
    """A new dependency u -> v: what reaches u now reaches v's successors, and so on."""
    cdef int32_t u = self.e_src[e], v = self.e_dst[e]
    cdef int w
    for w in range(self.n_words):
        if _spread(self, v, w, self.dw[w][u], True, tlim) or _spread(self, u, w, self.aw[w][v], False, tlim):
            return -1
    return 0


cdef int32_t _inversion_of(Core self, int32_t e) noexcept nogil:
    return u64map_get(&self.inv_map, <uint64_t>e | TOP)


cdef int _record_cycle(Core self, int32_t kind, int64_t i, int32_t b) noexcept nogil:
    """A circular or witness finding for arrival i: its cycle is self.path then the arrival."""
    cdef int32_t e = self.ar_edge[i], f
    cdef int64_t j
    if self._finding(kind, self.ar_row[i], e, b, -1, -1, -1, -1):
        return -1
    f = <int32_t>self.n_f - 1
    for j in range(self.path_n):
        if self._push_i32(&self.fp, &self.n_fp, &self.cap_fp, self.path[j]):
            return -1
    if self._push_i32(&self.fp, &self.n_fp, &self.cap_fp, e):
        return -1
    self.f_pn[f] = <int32_t>self.path_n + 1
    return 0


cdef int _new_inversion(Core self, int64_t i, bint was_order) noexcept nogil:
    """Arrival i closed a strong cycle of the order (in self.path): it is an inversion."""
    cdef int32_t e = self.ar_edge[i], u = self.e_src[e], v = self.e_dst[e], x
    cdef int w
    if _record_cycle(self, F_CIRCULAR, i, self.ar_kind[i]):
        return -1
    self.e_flags[e] |= EF_INV
    if was_order:
        self.out0_n[u] -= 1
        self.in0_n[v] -= 1
    if self.n_inv + 1 > self.cap_inv and self._grow_family(FAM_INV, max(self.cap_inv * 2, 16)):
        return -1
    x = <int32_t>self.n_inv
    self.n_inv += 1
    self.inv_edge[x] = e
    self.inv_wit[x] = 1             # its own cycle is its first witness
    self.inv_kept[x] = 1
    self.witnesses += 1
    if u64map_put(&self.inv_map, <uint64_t>e | TOP, x):
        self.oom = True
        return -1
    if x >= MAX_WORDS * 64:
        self.inversions_untracked += 1
        if self.ar_new[i] and self.n_words and _spread_edge(self, e, self.ar_seq[i]):
            return -1
        return 0
    if not self.have_in and _build_in(self):
        return -1
    w = x >> 6
    if w == self.n_words and self._new_word():
        return -1
    # the cycle runs v ~> u -> v: v's side reaches forward, u's side backward
    if (_spread(self, v, w, (<uint64_t>1) << (x & 63), True, self.ar_seq[i])
            or _spread(self, u, w, (<uint64_t>1) << (x & 63), False, self.ar_seq[i])):
        return -1
    if self.ar_new[i] and _spread_edge(self, e, self.ar_seq[i]):
        return -1
    return 0


cdef int _walk(Core self, int32_t start, int32_t goal, int32_t x, bint fwd, uint32_t tlim) noexcept nogil:
    """Append to self.path a path start ~> goal (fwd) or goal ~> start (backward, walking in-edges
    from start) through classes carrying inversion x's reach bit (aw: reaches its held class;
    dw: reached from its taken class). Every such class but the goal has a neighbour with the
    bit, so a depth-first walk finds the goal after few dead ends. 1 found, 0 not, -1 error."""
    cdef int32_t g = _next_gen(self), z, y, e, w = x >> 6
    cdef uint64_t bit = (<uint64_t>1) << (x & 63)
    cdef uint64_t* word = self.aw[w] if fwd else self.dw[w]
    cdef int64_t sp = 0, j, n0 = self.path_n
    cdef bint moved
    # the walk's stack: classes in queue[], the edge that reached each in par_e[class * 2]
    self.queue[sp] = start
    sp += 1
    self.vis[start * 2] = g
    while sp > 0:
        z = self.queue[sp - 1]
        if z == goal:
            break
        moved = False
        if fwd:
            for j in range(self.out_n[z]):
                e = self.out_e[z][2 * j + 1]
                y = self.out_e[z][2 * j]
                if self.vis[y * 2] != g and word[y] & bit and _present(self, e, tlim):
                    moved = True
                    break
        else:
            for j in range(self.in_n[z]):
                e = self.in_e[z][j]
                y = self.e_src[e]
                if self.vis[y * 2] != g and word[y] & bit and _present(self, e, tlim):
                    moved = True
                    break
        if not moved:
            sp -= 1
            continue
        self.vis[y * 2] = g
        self.par_e[y * 2] = e
        if sp >= self.cap_scratch:
            return 0
        self.queue[sp] = y
        sp += 1
    if sp == 0:
        return 0
    # the stack holds the path's classes; their edges, in path order
    if fwd:
        for j in range(1, sp):
            if _path_push(self, self.par_e[self.queue[j] * 2]):
                return -1
    else:
        for j in range(sp - 1, 0, -1):
            if _path_push(self, self.par_e[self.queue[j] * 2]):
                return -1
    return 1


cdef int _witness_path(Core self, int64_t i, int32_t x) noexcept nogil:
    """A cycle through arrival i (u -> v) and inversion x (b -> a), in self.path as v ~> u:
    v ~> b, b -> a, a ~> u. 1 when it is a simple cycle (strong, as the caller knows), else 0."""
    cdef int32_t e = self.ar_edge[i], u = self.e_src[e], v = self.e_dst[e]
    cdef int32_t ie = self.inv_edge[x], b = self.e_src[ie], a = self.e_dst[ie]
    cdef int rc
    self.path_n = 0
    rc = _walk(self, v, b, x, True, self.ar_seq[i])
    if rc <= 0:
        return rc
    if _path_push(self, ie):
        return -1
    rc = _walk(self, u, a, x, False, self.ar_seq[i])
    if rc <= 0:
        return rc
    return 1 if _path_is_simple(self) and self.e_src[self.path[0]] == v else 0


cdef int _witness(Core self, int64_t i) noexcept nogil:
    """Arrival i is no inversion: does it close a strong cycle through a known one? It is then a
    witness of the oldest inversion it closes a cycle through (the reach bits say which)."""
    cdef int32_t i0
    cdef int rc = 1
    i0 = _bits_meet(self, self.e_dst[self.ar_edge[i]], self.e_src[self.ar_edge[i]])
    if i0 < 0:
        return 0
    if self.any_rread or self.inv_kept[i0] < WITNESS_KEEP:
        # with recursive reads somewhere a plain cycle may not be strong: confirm it (and a kept
        # witness needs its cycle): the walk through i0 first, else a bounded strong search
        rc = 0
        if not self.any_rread:
            rc = _witness_path(self, i, i0)
        if rc == 0:
            rc = _strong_path(self, self.e_dst[self.ar_edge[i]], self.e_src[self.ar_edge[i]],
                              self.ar_kind[i], self.ar_seq[i], R_WIT,
                              self.lvl[self.rep[self.e_src[self.ar_edge[i]]]], False, WITNESS_BUDGET)
        if rc == -1:
            return -1
        if rc == -2:
            self.witness_budget_exhausted += 1
            if self.any_rread:
                return 0
            rc = 0          # no recursive reads: the cycle is there, only its evidence is not
        elif rc == 0:
            return 0        # no strong cycle
    self.inv_wit[i0] += 1
    self.witnesses += 1
    if rc == 1 and self.inv_kept[i0] < WITNESS_KEEP:
        self.inv_kept[i0] += 1
        return _record_cycle(self, F_WITNESS, i, i0)
    return 0


cdef inline bint _single(Core self, int32_t c) noexcept nogil:
    return self.rep[c] == c and self.mnext[c] < 0


cdef int _arrive(Core self, int64_t i, bint recomputed) noexcept nogil:
    """Bring arrival i into the order, in arrival order (lockdep's check_prev_add, with the
    search). recomputed: the components were rebuilt over this whole batch (levels hold for a
    superset of the order), so only an arrival inside a component can close an order cycle.
    Returns 1 when the order needs recomputing, 0 done, -1 error."""
    cdef int32_t e = self.ar_edge[i], u = self.e_src[e], v = self.e_dst[e], ru = -1, rv = -1
    cdef int k = self.ar_kind[i]
    cdef uint32_t tlim = self.ar_seq[i]
    cdef bint is_new = self.ar_new[i], inv_before = self.e_flags[e] & EF_INV, climbs = True
    cdef int rc = 0, found = 0
    if not inv_before:
        ru = self.rep[u]
        rv = self.rep[v]
        if ru == rv:
            found = _strong_path(self, v, u, k, tlim, R_COMP, ru, True, -1)
        elif not recomputed and self.lvl[ru] >= self.lvl[rv]:
            climbs = False
            # an order path v ~> u stays at levels <= u's; none exists when u has no order edge
            # coming in or v none going out
            if not ((_single(self, u) and self.in0_n[u] == 0) or (_single(self, v) and self.out0_n[v] == 0)):
                found = _strong_path(self, v, u, k, tlim, R_LEVEL, self.lvl[ru], True, -1)
        if found < 0:
            return -1
    if found:
        return -1 if _new_inversion(self, i, not is_new) else 0
    # not an inversion: a witness? (searched while the levels still hold without this edge)
    if self.n_inv and _witness(self, i):
        return -1
    if not inv_before:
        if is_new:
            self.out0_n[u] += 1
            self.in0_n[v] += 1
        if not climbs:
            if self.superset:
                rc = _raise(self, ru, rv)
                if rc < 0:
                    return -1
            elif _single(self, u) and self.in0_n[u] == 0:
                self.lvl[u] = self.lvl[rv] - 1      # nothing below u to push down
            elif _single(self, v) and self.out0_n[v] == 0:
                self.lvl[v] = self.lvl[ru] + 1      # nothing above v to push up
            else:
                rc = _raise(self, ru, rv)
                if rc < 0:
                    return -1
    if is_new and self.n_words and _spread_edge(self, e, tlim):
        return -1
    return rc


cdef int _add_adjacency(Core self, int64_t i) noexcept nogil:
    cdef int32_t e = self.ar_edge[i], u = self.e_src[e], v = self.e_dst[e]
    if _adj_add(&self.out_e[u], &self.out_n[u], &self.out_c[u], v, e):
        self.oom = True
        return -1
    if self.have_in and e >= self.in_upto and _in_add(self, v, e):
        return -1
    return 0


cdef int _finish_batch(Core self) noexcept nogil:
    """Bring the batch's arrivals into the graph, in arrival order, and search where needed."""
    cdef int64_t i, j, violating = 0, recompute_from = -1, added = 0, inv0, held = 0
    cdef int32_t e, ru, rv
    cdef int rc
    cdef bint rebuild = False
    if self._ensure_scratch():
        return -1
    for i in range(self.n_ar):
        if self.ar_new[i]:
            e = self.ar_edge[i]
            ru = self.rep[self.e_src[e]]
            rv = self.rep[self.e_dst[e]]
            if ru == rv or self.lvl[ru] >= self.lvl[rv]:
                violating += 1
    # a lift costs about the region it moves, a recomputation the whole graph: recompute when
    # the batch disagrees in many places relative to the graph's size
    if violating > RECOMPUTE_AT and violating * RECOMPUTE_RATIO > self.n_cls + self.n_edge:
        recompute_from = 0
    else:
        for i in range(self.n_ar):
            if self.ar_new[i]:
                if _add_adjacency(self, i):
                    return -1
                added = i + 1
            rc = _arrive(self, i, False)
            if rc < 0:
                return -1
            if rc == 1:
                recompute_from = i + 1
                break
    if recompute_from >= 0:
        for j in range(added, self.n_ar):
            if self.ar_new[j] and _add_adjacency(self, j):
                return -1
        if _tarjan(self):
            return -1
        # The batch's new dependencies inside a component may close cycles; the others cannot
        # (a cycle lies inside one component). Hold the first out of the order and bring each in
        # at its arrival, against levels that hold for everything else: one component search per
        # arrival would cost the component's size each, and one component can be most of the graph.
        for j in range(recompute_from, self.n_ar):
            e = self.ar_edge[j]
            if self.ar_new[j] and self.rep[self.e_src[e]] == self.rep[self.e_dst[e]]:
                self.e_flags[e] |= EF_HOLD
                held += 1
        if held and _tarjan(self):
            return -1
        self.superset = True
        for j in range(recompute_from, self.n_ar):
            e = self.ar_edge[j]
            if self.e_flags[e] & EF_HOLD:
                self.e_flags[e] &= <uint8_t>~EF_HOLD
                rc = _arrive(self, j, False)
                if rc == 1:
                    rc = _tarjan(self)
            else:
                inv0 = self.n_inv
                rc = _arrive(self, j, True)
                if self.n_inv > inv0:
                    rebuild = True
            if rc < 0:
                self.superset = False
                return -1
        self.superset = False
        # an inversion found among the dependencies the components were built over: take it out
        # (held ones never were in them)
        if rebuild and _tarjan(self):
            return -1
    rc = _irq_propagate(self)
    for i in range(self.n_uc):
        self.cls_flags[self.uc_cls[i]] &= <uint8_t>~CF_USAGE_CHANGED
    self.n_uc = 0
    for i in range(self.n_ar):
        self.e_bkinds[self.ar_edge[i]] = 0
    self.n_ar = 0
    return rc


cdef int _check_invariants(Core self) noexcept nogil:
    """0 when the order holds, else the number of the first broken invariant:
    1 an order edge between components does not climb; 2 a component's member list is not closed
    (rep of a member differs); 3 in0_n/out0_n disagree with the order edges; 4 an inversion is
    not flagged or a flagged edge is not an inversion; 5 a reach word is not closed under the
    dependencies (a class reaches an inversion's end without its bit)."""
    cdef int64_t c, j, e
    cdef int32_t y, m, r
    cdef int w
    cdef int32_t* cnt_in = <int32_t*>calloc(self.n_cls + 1, 4)
    cdef int32_t* cnt_out = <int32_t*>calloc(self.n_cls + 1, 4)
    cdef int bad = 0
    if cnt_in == NULL or cnt_out == NULL:
        free(cnt_in); free(cnt_out)
        return -1
    for c in range(self.n_cls):
        r = self.rep[c]
        m = r
        while m >= 0 and bad == 0:
            if self.rep[m] != r:
                bad = 2
            m = self.mnext[m]
        for j in range(self.out_n[c]):
            e = self.out_e[c][2 * j + 1]
            y = self.out_e[c][2 * j]
            if self.e_src[e] != c or self.e_dst[e] != y:
                bad = 2
            for w in range(self.n_words):
                if (self.dw[w][c] & ~self.dw[w][y]) or (self.aw[w][y] & ~self.aw[w][c]):
                    bad = 5
            if self.e_flags[e] & EF_INV:
                if _inversion_of(self, <int32_t>e) < 0:
                    bad = 4
                continue
            cnt_out[c] += 1
            cnt_in[y] += 1
            if self.rep[y] != r and self.lvl[self.rep[y]] <= self.lvl[r] and bad == 0:
                bad = 1
    for j in range(self.n_inv):
        if not (self.e_flags[self.inv_edge[j]] & EF_INV):
            bad = 4
    for c in range(self.n_cls):
        if bad == 0 and (cnt_in[c] != self.in0_n[c] or cnt_out[c] != self.out0_n[c]):
            bad = 3
    free(cnt_in)
    free(cnt_out)
    return bad


# ---------------------------------------------------------------------- irq reachability
# reach bit (X, w, st) = X * 4 + w * 2 + st: the class is reachable, by a strong path of one or
# more dependencies ending in state st, from an X-safe class. Bits only grow, so each (class,
# bit) is expanded once: linear overall.
# Rule of lockdep since 5.10 (usage_match, exclusive_mask): every IN-X/X-ON pair conflicts, but a
# read's bits drop out where the path does not need them: an IN-X-R use counts only if the path
# leaves the safe class held exclusive, an X-ON-R use only if the path's last dependency is not a
# recursive read. A safe class with a write IN-X use starts in state N (w = 0, st = 0), one with
# only read IN-X uses in state R (st = 1: only -(Ex)-> may follow); only w = 0 bits are used.
# Rule before 5.10 (irq_rule_pre510): reads conflict only with writes; w = 0: from any IN-X use,
# w = 1: from a write IN-X use.

cdef int _irq_check(Core self, int32_t y, int x) noexcept nogil:
    cdef uint8_t u = self.cls_usage[y], r = self.cls_reach[y]
    cdef bint on_w = (u >> (4 * x + 2)) & 1, on_r = (u >> (4 * x + 3)) & 1
    cdef bint from_any = (r >> (4 * x)) & 3, from_w = (r >> (4 * x + 2)) & 3
    cdef bint from_n = (r >> (4 * x)) & 1
    cdef bint need_w = False, need_n = False
    cdef int32_t f, on_bit
    cdef int64_t j
    if self.cls_flags[y] & (CF_IRQ_CHECKED_HARD << x):
        return 0
    if on_w and from_any:
        on_bit = 4 * x + 2
    elif on_r and self.irq_rule_pre510 and from_w:
        need_w = True
        on_bit = 4 * x + 3
    elif on_r and not self.irq_rule_pre510 and from_n:
        need_n = True
        on_bit = 4 * x + 3
    else:
        return 0
    self.cls_flags[y] |= <uint8_t>(CF_IRQ_CHECKED_HARD << x)
    if _irq_path(self, y, x, need_w, need_n) <= 0:
        return 0
    if self._finding(F_IRQ_INVERSION, -1, y, x, self.e_src[self.path[0]], on_bit,
                     self.cls_usage_occ[y * 8 + on_bit], -1):
        return -1
    f = <int32_t>self.n_f - 1
    for j in range(self.path_n):
        if self._push_i32(&self.fp, &self.n_fp, &self.cap_fp, self.path[j]):
            return -1
    self.f_pn[f] = <int32_t>self.path_n
    return 0


cdef int _irq_path(Core self, int32_t target, int x, bint need_w, bint need_n) noexcept nogil:
    """A shortest strong path of >= 1 dependencies from an X-safe class to target (self.path);
    need_n: its last dependency must not be a recursive read."""
    cdef int32_t g = _next_gen(self), c, x2, xn, y, y2, e
    cdef int64_t qh = 0, qt = 0, i
    cdef uint8_t st, km, nst, safe_mask = 1 if need_w else 3, u
    for c in range(self.n_cls):
        u = (self.cls_usage[c] >> (4 * x)) & safe_mask
        if not u:
            continue
        # since 5.10 a safe class with only read IN-X uses starts as after a recursive read
        st = 1 if (not self.irq_rule_pre510 and not (u & 1)) else 0
        self.vis[c * 2 + st] = g
        self.par_e[c * 2 + st] = -1
        self.queue[qt] = c * 2 + st
        qt += 1
    while qh < qt:
        x2 = self.queue[qh]
        qh += 1
        xn = x2 >> 1
        st = x2 & 1
        for i in range(self.out_n[xn]):
            e = self.out_e[xn][2 * i + 1]
            km = self.e_kinds[e]
            if st:
                km &= KM_E
            if not km:
                continue
            nst = 0 if (km & KM_N) else 1
            y = self.e_dst[e]
            if y == target and not (need_n and nst):
                # the target may itself be a source (its par_e marks the start of paths that
                # run through it), so leave its marks alone and walk back from the edge's tail
                self.path_n = 0
                if _path_push(self, e):
                    return -1
                # walk back from the edge's source to a source class (par_e == -1)
                x2 = xn * 2 + st
                while self.par_e[x2] >= 0:
                    if self.path_n > 2 * self.n_cls or _path_push(self, self.par_e[x2]):
                        return -1       # a BFS tree path is never longer: guard, not a case
                    x2 = self.e_src[self.par_e[x2]] * 2 + self.par_s[x2]
                _reverse_path(self)
                return 1
            y2 = y * 2 + nst
            if self.vis[y2] == g or (nst == 1 and self.vis[y * 2] == g):
                continue
            self.vis[y2] = g
            self.par_e[y2] = e
            self.par_s[y2] = st
            self.queue[qt] = y2
            qt += 1
    return 0


cdef void _reverse_path(Core self) noexcept nogil:
    cdef int64_t i = 0, j = self.path_n - 1
    cdef int32_t tmp
    while i < j:
        tmp = self.path[i]
        self.path[i] = self.path[j]
        self.path[j] = tmp
        i += 1
        j -= 1


cdef int _irq_prop(Core self, int32_t e, int x, int w, int st) noexcept nogil:
    cdef uint8_t km = self.e_kinds[e], nst, r
    cdef int32_t y = self.e_dst[e]
    cdef int base = 4 * x + 2 * w, bit
    if st:
        km &= KM_E
    if not km:
        return 0
    nst = 0 if (km & KM_N) else 1
    bit = base + nst
    r = self.cls_reach[y]
    if (r >> bit) & 1 or (nst == 1 and (r >> base) & 1):
        return 0
    self.cls_reach[y] = r | <uint8_t>(1 << bit)
    if _irq_check(self, y, x):
        return -1
    return self._push_i32(&self.wl, &self.n_wl, &self.cap_wl, y * 8 + bit)


cdef int _irq_from_class(Core self, int32_t c, int x, int w, int st) noexcept nogil:
    cdef int32_t i
    for i in range(self.out_n[c]):
        if _irq_prop(self, self.out_e[c][2 * i + 1], x, w, st):
            return -1
    return 0


cdef int _irq_propagate(Core self) noexcept nogil:
    cdef int64_t i
    cdef int32_t c, e, item
    cdef int x, w, st, bit
    cdef uint8_t u, r
    for i in range(self.n_uc):
        c = self.uc_cls[i]
        if self.cls_usage[c] & USAGE_IN_ANY:
            self.any_safe = True
    if not self.any_safe:
        return 0
    self.n_wl = 0
    for i in range(self.n_uc):
        c = self.uc_cls[i]
        u = self.cls_usage[c]
        for x in range(2):
            if not self.irq_rule_pre510:
                if (u >> (4 * x)) & 3 and _irq_from_class(self, c, x, 0, 0 if (u >> (4 * x)) & 1 else 1):
                    return -1
            elif (u >> (4 * x)) & 3 and _irq_from_class(self, c, x, 0, 0):
                return -1
            if self.irq_rule_pre510 and (u >> (4 * x)) & 1 and _irq_from_class(self, c, x, 1, 0):
                return -1
            if _irq_check(self, c, x):
                return -1
    for i in range(self.n_ar):
        e = self.ar_edge[i]
        c = self.e_src[e]
        u = self.cls_usage[c]
        r = self.cls_reach[c]
        for x in range(2):
            if not self.irq_rule_pre510:
                if (u >> (4 * x)) & 3 and _irq_prop(self, e, x, 0, 0 if (u >> (4 * x)) & 1 else 1):
                    return -1
            elif (u >> (4 * x)) & 3 and _irq_prop(self, e, x, 0, 0):
                return -1
            if self.irq_rule_pre510 and (u >> (4 * x)) & 1 and _irq_prop(self, e, x, 1, 0):
                return -1
            for bit in range(4 * x, 4 * x + 4):
                if (r >> bit) & 1 and _irq_prop(self, e, x, (bit >> 1) & 1, bit & 1):
                    return -1
    while self.n_wl > 0:
        self.n_wl -= 1
        item = self.wl[self.n_wl]
        c = item >> 3
        bit = item & 7
        if _irq_from_class(self, c, bit >> 2, (bit >> 1) & 1, bit & 1):
            return -1
    return 0
