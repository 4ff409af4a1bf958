"""One home per concept: the event schema lives in lockfleet.events, the errors and their exit
statuses in lockfleet.errors, and nothing else in the package defines them again.

The checks read the package's source (AST), so a second definition fails here whatever it is
called from: an op code or irq mask assigned, an Arrow schema or field of the event columns
written out, a `name/N` regex, the 255-byte name limit, an exit status, an exception class
outside the hierarchy, a logger not named after its module. The rest checks that the one row
check and the batch check agree on every value (hypothesis), and the table from error to status.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lockfleet
from lockfleet import errors, events
from lockfleet.agent.client.channel import Refused, Unreachable
from lockfleet.agent.client.event_files import FileError
from lockfleet.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    InputError,
    LockfleetError,
    OperationalError,
    UsageError,
    exit_status,
)
from lockfleet.events import EventError, check_row, normalize, split_class

PACKAGE = Path(lockfleet.__file__).resolve().parent
SCHEMA_HOME = PACKAGE / "events.py"
ERRORS_HOME = PACKAGE / "errors.py"

# names only lockfleet.events may assign
SCHEMA_NAMES = {"ACQUIRE", "RELEASE", "TRY_ACQUIRE", "TRYLOCK", "EXCLUSIVE", "SHARED", "RECURSIVE_READ",
                "HARDIRQ", "SOFTIRQ", "HARDIRQS_OFF", "SOFTIRQS_OFF", "IRQS_OFF", "IN_HARDIRQ", "IN_SOFTIRQ",
                "MAX_SUBCLASS", "MAX_NAME_BYTES", "USAGE_BITS", "USAGE_IRQ", "REQUIRED", "DEFAULTS"}
# names only lockfleet.errors may assign or define
ERROR_NAMES = {"EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_INTERRUPTED", "LockfleetError", "UsageError",
               "InputError", "OperationalError", "CliError"}
# the event columns: a pa.schema/pa.field/pa.struct naming one is a second schema
EVENT_COLUMNS = {"ts_ns", "tid", "op", "lock", "mode", "subclass", "instance", "irq"}
# a regex that reads the `/N` subclass suffix of a class name
SUBCLASS_REGEX = re.compile(r"/\(\??\[?[0-9\\]")


def _sources() -> list[tuple[Path, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "v1" in path.relative_to(PACKAGE).parts:   # generated from proto/
            continue
        out.append((path, ast.parse(path.read_text(), str(path))))
    assert len(out) > 50, "the package's sources were not found"
    return out


SOURCES = _sources()


def _assigned(node: ast.AST) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for t in targets:
        for sub in ast.walk(t):
            if isinstance(sub, ast.Name):
                names.append(sub.id)
    return names


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"


def test_only_events_defines_op_codes_modes_irq_flags_and_limits() -> None:
    found = [f"{_where(path, node)}: {name}"
             for path, tree in SOURCES if path != SCHEMA_HOME
             for node in ast.walk(tree) for name in _assigned(node) if name in SCHEMA_NAMES]
    found += [f"{_where(path, node)}: class {node.name}"
              for path, tree in SOURCES if path != SCHEMA_HOME
              for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name in {"Op", "Mode", "Irq"}]
    assert not found, "defined again outside lockfleet/events.py (import them from there):\n" + "\n".join(found)


def test_only_events_writes_out_the_event_schema() -> None:
    found = []
    for path, tree in SOURCES:
        if path == SCHEMA_HOME:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("schema", "field", "struct")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "pa"):
                cols = {c.value for arg in [*node.args, *(k.value for k in node.keywords)] for c in ast.walk(arg)
                        if isinstance(c, ast.Constant) and c.value in EVENT_COLUMNS}
                if cols:
                    found.append(f"{_where(path, node)}: pa.{node.func.attr} of {sorted(cols)}")
    assert not found, "an event schema written out again (use events.SCHEMA or events.schema()):\n" + "\n".join(found)


def test_only_events_parses_class_names_and_knows_the_name_limit() -> None:
    found = []
    for path, tree in SOURCES:
        if path == SCHEMA_HOME:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SUBCLASS_REGEX.search(node.value):
                found.append(f"{_where(path, node)}: a `name/N` regex {node.value!r} (use events.split_class)")
            if isinstance(node, ast.Compare):
                if any(isinstance(c, ast.Constant) and c.value == 255 for c in ast.walk(node)):
                    found.append(f"{_where(path, node)}: 255 compared (use events.MAX_NAME_BYTES)")
            if isinstance(node, ast.FunctionDef) and node.name in ("split_class", "split_subclass", "check_row",
                                                                    "_check_row"):
                found.append(f"{_where(path, node)}: def {node.name}")
    assert not found, "\n".join(found)


def test_only_errors_defines_the_exit_statuses_and_the_base_classes() -> None:
    found = [f"{_where(path, node)}: {name}"
             for path, tree in SOURCES if path != ERRORS_HOME
             for node in ast.walk(tree) for name in _assigned(node) if name in ERROR_NAMES]
    found += [f"{_where(path, node)}: class {node.name}"
              for path, tree in SOURCES if path != ERRORS_HOME
              for node in ast.walk(tree) if isinstance(node, ast.ClassDef) and node.name in ERROR_NAMES]
    assert not found, "defined again outside lockfleet/errors.py:\n" + "\n".join(found)


def test_loggers_are_named_after_their_module() -> None:
    found = []
    for path, tree in SOURCES:
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "getLogger"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                found.append(f"{_where(path, node)}: getLogger({node.args[0].value!r})")
    # the one exception: the demo quiets the whole package's loggers by their common parent
    found = [f for f in found if not f.startswith("lockfleet/demo/fleet.py") or "'lockfleet'" not in f]
    assert not found, "use logging.getLogger(__name__):\n" + "\n".join(found)


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], "lockfleet."):
        if info.name.endswith("__main__") or info.name.startswith(("lockfleet.v1", "lockfleet.liblockfleet")):
            continue
        names.append(info.name)
    return names


def test_every_exception_class_is_a_lockfleet_error() -> None:
    outside = []
    for name in _modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == name
                    and not issubclass(value, LockfleetError)):
                outside.append(f"{name}.{value.__name__}")
    assert not outside, "exception classes outside lockfleet.errors' hierarchy: " + ", ".join(outside)


def test_the_one_table_from_error_to_exit_status() -> None:
    assert (EXIT_OK, EXIT_FAILURE, EXIT_USAGE) == (0, 1, 2)
    assert exit_status(UsageError("bad option")) == EXIT_USAGE
    assert exit_status(EventError("column 'op' row 3")) == EXIT_USAGE
    assert exit_status(FileError("x.parquet: not an event file")) == EXIT_USAGE
    assert exit_status(Refused("INVALID_ARGUMENT", "bad batch")) == EXIT_USAGE
    assert exit_status(Refused("UNAVAILABLE", "draining")) == EXIT_FAILURE
    assert exit_status(Unreachable("cannot reach")) == EXIT_FAILURE
    assert exit_status(OperationalError("disk")) == EXIT_FAILURE
    assert exit_status(RuntimeError("a bug")) == EXIT_FAILURE
    assert exit_status(KeyboardInterrupt()) == EXIT_INTERRUPTED
    # the old built-in bases still hold, so `except ValueError` written against them still catches
    assert issubclass(EventError, ValueError) and issubclass(InputError, UsageError)
    assert issubclass(lockfleet.EventError, errors.InputError)


def test_split_class() -> None:
    assert split_class("&pipe->mutex/1") == ("&pipe->mutex", 1)
    assert split_class("&type->s_umount_key/7") == ("&type->s_umount_key", 7)
    assert split_class("a/b") == ("a/b", 0)
    assert split_class("a/8") == ("a/8", 0)          # past MAX_SUBCLASS: part of the name
    assert split_class("a/0") == ("a/0", 0)          # lockdep prints no /0
    assert split_class("/3") == ("/3", 0)            # no name before it
    assert events.class_name(*split_class("x/3")) == "x/3"


_U8 = st.integers(0, 255)
_ROW = st.fixed_dictionaries({
    "ts_ns": st.integers(-(1 << 63), (1 << 63) - 1), "tid": st.integers(-(1 << 63), (1 << 63) - 1),
    "op": _U8, "lock": st.sampled_from(["a", "&rq->lock", ""]), "mode": _U8, "subclass": _U8,
    "instance": st.integers(0, (1 << 64) - 1), "irq": _U8,
    "site": st.none() | st.text(max_size=3), "task": st.none() | st.text(max_size=3)})


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_ROW)
def test_the_row_check_and_the_batch_check_agree(row: dict) -> None:
    """Any event that fits the Arrow types: check_row refuses it exactly when normalize refuses the
    one-row batch, and names the same column."""
    batch = pa.RecordBatch.from_pylist([row], schema=events.schema(events.AGENT_COLUMNS))
    try:
        normalize(batch)
        batch_error = None
    except EventError as exc:
        batch_error = str(exc)
    try:
        check_row(**row)
        row_error = None
    except EventError as exc:
        row_error = str(exc)
    assert (batch_error is None) == (row_error is None), (batch_error, row_error)
    if batch_error is not None and row_error is not None:
        column = re.search(r"column '(\w+)'", batch_error)
        assert column is not None and row_error.startswith(column.group(1)), (batch_error, row_error)


@pytest.mark.parametrize("column,value", [("op", 3), ("mode", 3), ("subclass", 8), ("irq", 16)])
def test_the_limits_are_the_contract_ones(column: str, value: int) -> None:
    low, high, _ = events.LIMITS[column]
    assert (low, high) == (0, value - 1)
    with pytest.raises(EventError, match=column):
        check_row(**{"ts_ns": 0, "tid": 1, "op": 0, "lock": "a", column: value})
    check_row(**{"ts_ns": 0, "tid": 1, "op": 0, "lock": "a", column: value - 1})


ROOT = PACKAGE.parent.parent


def test_docs_contract_states_the_schema_the_code_keeps() -> None:
    """docs/contract.md section 2 and lockfleet.events say the same columns, types and required set."""
    text = (ROOT / "docs" / "contract.md").read_text()
    rows = {col: typ for col, typ, _ in re.findall(r"^\| `(\w+)` \| ([^|]+) \| (yes|no[^|]*) \|", text, re.M)}
    assert list(rows) == list(events.COLUMNS)
    for col, field in zip(events.COLUMNS, events.SCHEMA):
        name = {pa.string(): "utf8"}.get(field.type, str(field.type))
        assert rows[col].split()[0].rstrip(",") == name, (col, rows[col], name)
    required = re.findall(r"^\| `(\w+)` \| [^|]+ \| yes \|", text, re.M)
    assert tuple(required) == events.REQUIRED


def test_code_points_to_docs_not_to_issues_or_a_missing_contract() -> None:
    found = []
    for folder in ("service", "tests", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if ".venv" in path.parts or path == Path(__file__):
                continue
            for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if re.search(r"\bCONTRACT\b(?!\.md)|CONTRACT\.md section|\bissue \d+", line):
                    found.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_enums_hold_the_contract_values_and_the_aliases_are_plain_ints() -> None:
    assert {m.name: m.value for m in events.Op} == {"ACQUIRE": 0, "RELEASE": 1, "TRY_ACQUIRE": 2}
    assert {m.name: m.value for m in events.Mode} == {"EXCLUSIVE": 0, "SHARED": 1, "RECURSIVE_READ": 2}
    assert {m.name: m.value for m in events.Irq} == {"HARDIRQ": 1, "SOFTIRQ": 2, "HARDIRQS_OFF": 4,
                                                     "SOFTIRQS_OFF": 8}
    for alias, member in ((events.ACQUIRE, events.Op.ACQUIRE), (events.TRY_ACQUIRE, events.Op.TRY_ACQUIRE),
                          (events.RECURSIVE_READ, events.Mode.RECURSIVE_READ), (events.IRQS_OFF, 12)):
        assert type(alias) is int and alias == member
    assert events.LIMITS["irq"][1] == 15 and events.USAGE_IRQ["IN-HARDIRQ-W"] == 1 | 12
