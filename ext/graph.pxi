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
    cdef int64_t c
    if self.path_n + 1 > self.cap_path:
        c = max(self.cap_path * 2, 64)
        if _grow(<void**>&self.path, c, 4):
            self.oom = True
            return -1
        self.cap_path = c
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


cdef int _simple_dfs(Core self, int32_t v, int32_t u, int kclose, uint32_t tlim, int32_t comp) noexcept nogil:
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
            y = self.e_dst[e]
            if comp >= 0 and self.rep[y] != comp:
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


cdef int _strong_path(Core self, int32_t v, int32_t u, int kclose, uint32_t tlim, int32_t comp) noexcept nogil:
    """Is there a strong path v ~> u that the arrival u -(kclose)-> v closes into a strong cycle,
    using kinds arrived by tlim and classes of component comp? 1 yes (path in self.path), 0 no."""
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
        for i in range(self.out_n[x]):
            e = self.out_e[x][2 * i + 1]
            y = self.e_dst[e]
            if comp >= 0 and self.rep[y] != comp:
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
                return _simple_dfs(self, v, u, kclose, tlim, comp)
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
    """A new edge from component ru to rv with lvl[ru] >= lvl[rv]: lift rv above ru and push the
    lift forward until every edge climbs again. 1: the lift came back to ru, so the edge closes a
    cycle of components, or it outgrew its budget (levels are then left inconsistent: the caller
    recomputes); 0: done."""
    cdef int64_t sp = 0, work = 0
    # a lift that grows past half the graph costs about what recomputing it does: give up and
    # let the caller recompute (a chain inserted tail first, in small batches, would otherwise
    # lift its whole tail on every insert)
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
    """Rebuild components (rep, member lists) and their topological order from scratch:
    Tarjan's algorithm, iterative. Components complete in reverse topological order."""
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
                cs_pos[cp - 1] += 1
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
                y = self.rep[self.out_e[w][2 * p]]
                if y != x and self.lvl[y] <= self.lvl[x]:
                    self.lvl[y] = self.lvl[x] + 1
            w = self.mnext[w]
    free(index); free(low); free(stk); free(cs_node); free(cs_pos); free(onst)
    return 0


cdef int _check_cycle(Core self, int64_t i) noexcept nogil:
    """Arrival i lies inside a component: search for a strong cycle through it."""
    cdef int32_t e = self.ar_edge[i], u = self.e_src[e], v = self.e_dst[e], f
    cdef int k = self.ar_kind[i]
    cdef int64_t j
    cdef int rc = _strong_path(self, v, u, k, self.ar_seq[i], self.rep[u])
    if rc <= 0:
        return rc
    if self._finding(F_CIRCULAR, self.ar_row[i], e, k, -1, -1, -1, -1):
        return -1
    f = <int32_t>self.n_f - 1
    for j in range(self.path_n):
        if self._push_i32(&self.fp, &self.n_fp, &self.cap_fp, self.path[j]):
            return -1
    if self._push_i32(&self.fp, &self.n_fp, &self.cap_fp, e):
        return -1
    self.f_pn[f] = <int32_t>self.path_n + 1
    return 0


cdef int _finish_batch(Core self) noexcept nogil:
    """Bring the batch's arrivals into the graph, in arrival order, and search where needed."""
    cdef int64_t i, j, violating = 0, recompute_from = -1, added = 0
    cdef int32_t e, u, v, ru, rv
    cdef int rc
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
            e = self.ar_edge[i]
            u = self.e_src[e]
            v = self.e_dst[e]
            if self.ar_new[i]:
                if _adj_add(&self.out_e[u], &self.out_n[u], &self.out_c[u], v, e):
                    self.oom = True
                    return -1
                added = i + 1
            ru = self.rep[u]
            rv = self.rep[v]
            if ru == rv:
                if _check_cycle(self, i) < 0:
                    return -1
            elif self.ar_new[i] and self.lvl[ru] >= self.lvl[rv]:
                rc = _raise(self, ru, rv)
                if rc < 0:
                    return -1
                if rc == 1:
                    recompute_from = i
                    break
    if recompute_from >= 0:
        for j in range(added, self.n_ar):
            if self.ar_new[j]:
                e = self.ar_edge[j]
                u = self.e_src[e]
                v = self.e_dst[e]
                if _adj_add(&self.out_e[u], &self.out_n[u], &self.out_c[u], v, e):
                    self.oom = True
                    return -1
        if _tarjan(self):
            return -1
        for j in range(recompute_from, self.n_ar):
            e = self.ar_edge[j]
            if self.rep[self.e_src[e]] == self.rep[self.e_dst[e]]:
                if _check_cycle(self, j) < 0:
                    return -1
    rc = _irq_propagate(self)
    for i in range(self.n_uc):
        self.cls_flags[self.uc_cls[i]] &= <uint8_t>~16
    self.n_uc = 0
    for i in range(self.n_ar):
        self.e_bkinds[self.ar_edge[i]] = 0
    self.n_ar = 0
    return rc


# ---------------------------------------------------------------------- irq reachability
# reach bit (X, w, st) = X * 4 + w * 2 + st: the class is reachable, by a strong path of one or
# more dependencies ending in state st, from an X-safe class (w = 0: any IN-X use; w = 1: a
# write IN-X use). Bits only grow, so each (class, bit) is expanded once: linear overall.

cdef int _irq_check(Core self, int32_t y, int x) noexcept nogil:
    cdef uint8_t u = self.cls_usage[y], r = self.cls_reach[y]
    cdef bint on_w = (u >> (4 * x + 2)) & 1, on_r = (u >> (4 * x + 3)) & 1
    cdef bint from_any = (r >> (4 * x)) & 3, from_w = (r >> (4 * x + 2)) & 3
    cdef bint need_w
    cdef int32_t f, on_bit
    cdef int64_t j
    if self.cls_flags[y] & (4 << x):
        return 0
    if on_w and from_any:
        need_w = False
        on_bit = 4 * x + 2
    elif on_r and from_w:
        need_w = True
        on_bit = 4 * x + 3
    else:
        return 0
    self.cls_flags[y] |= <uint8_t>(4 << x)
    if _irq_path(self, y, x, need_w) <= 0:
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


cdef int _irq_path(Core self, int32_t target, int x, bint need_w) noexcept nogil:
    """A shortest strong path of >= 1 dependencies from an X-safe class to target (self.path)."""
    cdef int32_t g = _next_gen(self), c, x2, xn, y, y2, e
    cdef int64_t qh = 0, qt = 0, i
    cdef uint8_t st, km, nst, safe_mask = 1 if need_w else 3
    for c in range(self.n_cls):
        if (self.cls_usage[c] >> (4 * x)) & safe_mask:
            self.vis[c * 2] = g
            self.par_e[c * 2] = -1
            self.queue[qt] = c * 2
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
            if y == target:
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
        if self.cls_usage[c] & 0x33:
            self.any_safe = True
    if not self.any_safe:
        return 0
    self.n_wl = 0
    for i in range(self.n_uc):
        c = self.uc_cls[i]
        u = self.cls_usage[c]
        for x in range(2):
            if (u >> (4 * x)) & 3 and _irq_from_class(self, c, x, 0, 0):
                return -1
            if (u >> (4 * x)) & 1 and _irq_from_class(self, c, x, 1, 0):
                return -1
            if _irq_check(self, c, x):
                return -1
    for i in range(self.n_ar):
        e = self.ar_edge[i]
        c = self.e_src[e]
        u = self.cls_usage[c]
        r = self.cls_reach[c]
        for x in range(2):
            if (u >> (4 * x)) & 3 and _irq_prop(self, e, x, 0, 0):
                return -1
            if (u >> (4 * x)) & 1 and _irq_prop(self, e, x, 1, 0):
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
