# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Checks of one event batch's columns, in C over their buffers (events.normalize's hot half).

A batch is checked whole before any of it is applied; each check returns the first row that
breaks it (-1 when none), so that the error names the row. One pass per column, no temporary
arrays: a live agent's small batches (a few hundred rows) pay microseconds, not a numpy call per
check.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t


def first_above(const uint8_t[::1] values, int top):
    """The first row whose value exceeds `top`, or -1."""
    cdef Py_ssize_t i, n = values.shape[0], r = -1
    with nogil:
        for i in range(n):
            if values[i] > top:
                r = i
                break
    return r


def first_bad_index(const int32_t[::1] index, int64_t n_dict):
    """The first row whose dictionary index is not -1 (null) and not in [0, n_dict), or -1."""
    cdef Py_ssize_t i, n = index.shape[0], r = -1
    cdef int32_t x
    with nogil:
        for i in range(n):
            x = index[i]
            if x < -1 or x >= n_dict:
                r = i
                break
    return r


cdef inline bint _empty(const uint8_t* off, int width, Py_ssize_t j) noexcept nogil:
    if width == 8:
        return (<const int64_t*>off)[j + 1] == (<const int64_t*>off)[j]
    return (<const int32_t*>off)[j + 1] == (<const int32_t*>off)[j]


def any_empty(const signed char[::1] offsets, int width, Py_ssize_t first, Py_ssize_t length):
    """Does a utf8 (width 4) or large_utf8 (width 8) array of `length` values from value `first`
    hold an empty string? From its offsets buffer alone (nulls count as empty: callers drop them
    or treat them alike)."""
    cdef Py_ssize_t j
    cdef bint found = False
    cdef const uint8_t* off
    if length <= 0 or offsets.shape[0] < (first + length + 1) * width:
        return False
    off = <const uint8_t*>&offsets[0] + first * width
    with nogil:
        for j in range(length):
            if _empty(off, width, j):
                found = True
                break
    return found


def first_empty_row(const int32_t[::1] index, const signed char[::1] offsets, int width, Py_ssize_t first):
    """The first row whose index points at an empty string of the dictionary (offsets as in
    any_empty), or -1. Null rows (-1) are skipped."""
    cdef Py_ssize_t i, n = index.shape[0], r = -1
    cdef const uint8_t* off = <const uint8_t*>&offsets[0] + first * width
    cdef int32_t x
    with nogil:
        for i in range(n):
            x = index[i]
            if x >= 0 and _empty(off, width, x):
                r = i
                break
    return r
