"""Lock class names as kernels print them, made comparable across boots, hosts and kernels.

Lockdep prints a class as `name`, `name/N` (subclass N > 0, from `*_lock_nested`) and, when two
classes share a name string, `name#V` (lock_class.name_version, which depends on the order the
classes were registered in that boot: `&lo->lo_ctl_mutex#2` on one boot may be `#3` on the
next). `/N` is part of the class and becomes the `subclass` column; `#V` is an accident of the boot
and is stripped by the built-in rules, with the old `&(&x)->rlock` spinlock names of kernels
before 5.x rewritten to the `&x` later kernels print.

Rules are regex substitutions applied in order to the name without its `/N`. A rules file holds
one `pattern<TAB>replacement` per line (Python `re` syntax, `\\1` for groups); blank lines and
lines starting with `#` are skipped (write `\\#` for a pattern that starts with `#`). A name that
the rules make empty is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import InputError
from ...events import class_name, split_class


class RulesError(InputError):
    """A rules file that cannot be read or holds a bad line; the message names file and line."""


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    replacement: str

    def apply(self, name: str) -> str:
        return self.pattern.sub(self.replacement, name)


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(re.compile(r"#\d+$"), ""),                    # per-boot name_version: `&lo->lo_ctl_mutex#2`
    Rule(re.compile(r"^&\(&(.+)\)->rlock$"), r"&\1"),  # pre-5.x spinlock: `&(&zone->lock)->rlock`
)


def parse_rules(text: str, origin: str = "rules") -> list[Rule]:
    rules = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        pattern, sep, replacement = line.partition("\t")
        if not sep:
            raise RulesError(f"{origin}:{no}: expected `pattern<TAB>replacement`")
        try:
            rule = Rule(re.compile(pattern), replacement)
            rule.apply("probe")  # a bad group reference fails here, not on the first real name
        except (re.error, IndexError) as exc:
            raise RulesError(f"{origin}:{no}: {exc}") from None
        rules.append(rule)
    return rules


def load_rules(path: str | Path) -> list[Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read rules: {exc.strerror or exc}") from None
    return parse_rules(text, str(path))


class Normalizer:
    """Maps a printed class name to (name, subclass) through the rules."""

    def __init__(self, rules: tuple[Rule, ...] | list[Rule] = DEFAULT_RULES) -> None:
        self.rules = tuple(rules)
        self._cache: dict[str, tuple[str, int]] = {}

    @classmethod
    def from_options(cls, rules_file: str | Path | None = None, defaults: bool = True) -> Normalizer:
        """The built-in rules (unless `defaults` is False) followed by those of `rules_file`."""
        rules = list(DEFAULT_RULES) if defaults else []
        if rules_file is not None:
            rules += load_rules(rules_file)
        return cls(rules)

    def fingerprint(self) -> str:
        return "\n".join(f"{r.pattern.pattern}\t{r.replacement}" for r in self.rules)

    def __call__(self, printed: str) -> tuple[str, int]:
        hit = self._cache.get(printed)
        if hit is None:
            name, sub = split_class(printed.strip())
            for rule in self.rules:
                try:
                    name = rule.apply(name)
                except (re.error, IndexError):  # a group the pattern did not match
                    continue
            hit = self._cache[printed] = (name.strip(), sub)
        return hit

    def printed(self, printed: str) -> str:
        """The normalised class as lockdep (and the engine's alerts) print it: `name` or `name/N`."""
        return class_name(*self(printed))
