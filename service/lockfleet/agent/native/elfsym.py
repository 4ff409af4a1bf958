"""Symbols of ELF files: name an address of a loaded module (given as the module's path and the
ELF virtual address, i.e. the address minus the module's load bias) the way the kernel prints
one, without running any tool.

    syms = ElfSymbols.load("/usr/bin/prog")
    syms.code(0x1189)      # 'worker+0x19/0x60'      (the function holding the address)
    syms.data(0x4040)      # 'lock_a' or 'table+0x8' (the object holding the address)

Both the full symbol table (`.symtab`, present unless the file is stripped) and the dynamic one
(`.dynsym`) are read, so that static functions and file-local variables have names. A name that
several local symbols share in one file (two `static pthread_mutex_t lock;` in different source
files) is made unique with its address: `lock@0x4040`. An address no symbol holds is None.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SHT_SYMTAB, SHT_DYNSYM = 2, 11
STT_OBJECT, STT_FUNC, STT_TLS, STT_GNU_IFUNC = 1, 2, 6, 10
SHN_UNDEF = 0


@dataclass(frozen=True)
class _Sym:
    value: int
    size: int
    name: str


class _Table:
    """Symbols of one kind, sorted by address, for "which symbol holds this address"."""

    def __init__(self, syms: list[_Sym]) -> None:
        self.syms = sorted(syms, key=lambda s: (s.value, -s.size))
        self.starts = [s.value for s in self.syms]

    def find(self, addr: int) -> _Sym | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        # a few symbols may start at or before addr (aliases, nested sizes): take one that holds it
        for j in range(i, max(i - 8, -1), -1):
            s = self.syms[j]
            if s.value <= addr < s.value + max(s.size, 1):
                return s
        return None


class ElfSymbols:
    def __init__(self, path: str, functions: list[_Sym], objects: list[_Sym]) -> None:
        self.path = path
        self._code = _Table(functions)
        self._data = _Table(objects)

    @staticmethod
    @lru_cache(maxsize=256)
    def load(path: str) -> ElfSymbols:
        """The symbols of the ELF file at `path` (an empty table when it cannot be read)."""
        try:
            data = Path(path).read_bytes()
        except OSError:
            return ElfSymbols(path, [], [])
        try:
            functions, objects = _parse(data)
        except (struct.error, ValueError, IndexError, UnicodeDecodeError):
            functions, objects = [], []
        return ElfSymbols(path, functions, objects)

    def code(self, addr: int) -> str | None:
        """`func+0xOFF/0xSIZE` for a code address, as the kernel prints a frame."""
        s = self._code.find(addr)
        if s is None:
            return None
        return f"{s.name}+{addr - s.value:#x}/{max(s.size, 1):#x}"

    def data(self, addr: int) -> str | None:
        """`name`, or `name+0xOFF` inside it, for a data address."""
        s = self._data.find(addr)
        if s is None:
            return None
        return s.name if addr == s.value else f"{s.name}+{addr - s.value:#x}"


def _parse(data: bytes) -> tuple[list[_Sym], list[_Sym]]:
    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        sh_fmt, sym_fmt = end + "IIQQQQIIQQ", end + "IBBHQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        sh_fmt, sym_fmt = end + "IIIIIIIIII", end + "IIIBBH"
    sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    seen: dict[tuple[int, str], tuple[_Sym, int, bool]] = {}   # (value, name) -> (sym, type, local)
    for sh in sections:
        sh_type, sh_offset, sh_size, sh_link, sh_entsize = sh[1], sh[4], sh[5], sh[6], sh[9]
        if sh_type not in (SHT_SYMTAB, SHT_DYNSYM) or not sh_entsize:
            continue
        strtab = sections[sh_link]
        str_off, str_size = strtab[4], strtab[5]
        strings = data[str_off:str_off + str_size]
        for k in range(1, sh_size // sh_entsize):
            fields = struct.unpack_from(sym_fmt, data, sh_offset + k * sh_entsize)
            if is64:
                st_name, st_info, _other, st_shndx, st_value, st_size = fields
            else:
                st_name, st_value, st_size, st_info, _other, st_shndx = fields
            kind, bind = st_info & 0xF, st_info >> 4
            if st_shndx == SHN_UNDEF or kind not in (STT_OBJECT, STT_FUNC, STT_GNU_IFUNC) or not st_name:
                continue
            stop = strings.find(b"\0", st_name)
            name = strings[st_name:stop if stop >= 0 else None].decode("utf-8", "replace")
            if not name:
                continue
            key = (st_value, name)
            if key not in seen or (st_size and not seen[key][0].size):
                seen[key] = (_Sym(st_value, st_size, name), kind, bind == 0)
    # a name several distinct symbols share: unique with the address
    count: dict[str, int] = {}
    for (_, name) in seen:
        count[name] = count.get(name, 0) + 1
    functions, objects = [], []
    for (value, name), (sym, kind, _local) in seen.items():
        if count[name] > 1:
            sym = _Sym(value, sym.size, f"{name}@{value:#x}")
        (objects if kind == STT_OBJECT else functions).append(sym)
    return functions, objects
