"""The engine's parts import only lower parts, and no module imports itself round a circle.

Every module under ``gateway/`` is parsed (never imported) and each import of ``gateway.*`` in it is
taken, wherever it is written: at the top, inside a function (a lazy import), or under
``TYPE_CHECKING`` (a type is a dependency too). The order of parts, lowest first::

    clock, errors, messages, config,   the leaves
    sockets                            (they may import one another, never round a circle)
    redis, share                       may import the leaves
    http, cache, breaker, traffic,     may import the two tiers below, never one another
    observe
    forwarder, engine                  the top: may import anything

A part's own ``__init__`` docstring says what it may import (``May import: ...``); that is checked
too, so the folder a reader opens tells the truth about it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "gateway"
TIERS: tuple[frozenset[str], ...] = (
    # "gateway": the package (its __version__)
    frozenset({"gateway", "clock", "errors", "messages", "config", "sockets"}),
    frozenset({"redis", "share"}),
    frozenset({"http", "cache", "breaker", "traffic", "observe"}),
    frozenset({"forwarder", "engine", "build"}),
)
LEAVES = TIERS[0]



def module_name(path: Path) -> str:
    """``gateway/cache/policy.py`` -> ``gateway.cache.policy``; a package's ``__init__`` is the package."""
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the engine, by dotted name."""
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def part_of(module: str) -> str:
    """The part a module belongs to: its folder under ``gateway/``, or its own name for a top module."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else pieces[0]


def tier_of(part: str) -> int:
    for index, tier in enumerate(TIERS):
        if part in tier:
            return index
    raise AssertionError(f"gateway.{part} belongs to no tier: add it to TIERS in {Path(__file__).name}")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import in ``tree`` reaches (``from a import b`` yields ``a.b`` and ``a``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None))
              in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            yield node.args[0].value


@cache
def imports() -> dict[str, frozenset[str]]:
    """Per module, the engine's modules it imports (a name from a module counts as that module)."""
    known = modules()
    graph: dict[str, frozenset[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found = set()
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            if name.split(".")[0] != "gateway":
                continue
            while name not in known:  # "gateway.x.y.Name" -> "gateway.x.y"
                name = name.rpartition(".")[0]
            if name != module:
                found.add(name)
        graph[module] = frozenset(found)
    return graph


def allowed(importer: str, imported: str) -> bool:
    """Whether the part of ``importer`` may import the part of ``imported`` by the tiers."""
    mine, theirs = part_of(importer), part_of(imported)
    if mine == theirs or theirs == "gateway":
        return True
    if mine in LEAVES and theirs in LEAVES:
        return True  # circles among the leaves are the circle test's business
    return tier_of(theirs) < tier_of(mine) or tier_of(mine) == len(TIERS) - 1


def wrong_way() -> set[tuple[str, str]]:
    """Every (importer, imported) pair that goes against the order of the parts."""
    return {(a, b) for a, targets in imports().items() for b in targets if not allowed(a, b)}


def declared() -> dict[str, frozenset[str]]:
    """Per part folder, the parts its ``__init__`` docstring says it may import."""
    out: dict[str, frozenset[str]] = {}
    for module, path in modules().items():
        if path.name != "__init__.py" or module.count(".") != 1:
            continue  # the part folders only (a folder inside a part answers to its part's rule)
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        line = re.search(r"May import:(.*?)(?:\n\n|$)", doc, re.S)
        assert line is not None, f"{path.relative_to(ROOT.parent)}: its docstring says nothing of what it may import"
        out[part_of(module)] = frozenset(re.findall(r"gateway\.(\w+)", line.group(1)))
    return out


def undeclared() -> set[tuple[str, str]]:
    """Every (importer, imported) pair of another part that the importer's folder does not declare."""
    rules = declared()
    found = set()
    for importer, targets in imports().items():
        mine = part_of(importer)
        if mine not in rules:
            continue
        for imported in targets:
            theirs = part_of(imported)
            if theirs not in (mine, "gateway") and theirs not in rules[mine]:
                found.add((importer, imported))
    return found


def circles() -> list[frozenset[str]]:
    """The strongly connected groups of modules that import one another (Tarjan), each of two or more."""
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# -- the checks ------------------------------------------------------------------------------------


def test_every_part_belongs_to_a_tier() -> None:
    for module in modules():
        tier_of(part_of(module))


def test_parts_import_only_lower_parts() -> None:
    found = sorted(wrong_way())
    assert not found, "imports against the order of the parts:\n" + "\n".join(f"  {a} -> {b}" for a, b in found)


def test_parts_import_only_what_their_folder_declares() -> None:
    found = sorted(undeclared())
    assert not found, "imports a part's docstring does not declare:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in found)


def test_no_import_circles() -> None:
    found = [sorted(group) for group in circles()]
    assert not found, "modules importing one another:\n" + "\n".join(f"  {' <-> '.join(g)}" for g in found)


def test_the_checker_sees_lazy_relative_and_type_only_imports(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway.cache.policy import cache_key\n"
        "def later():\n    from ..forwarder import forward_request\n    import gateway.clock\n"
        "from . import cors\n"
    )
    names = set(_imported_names(ast.parse(source), "gateway.traffic.guard", False))
    assert {"gateway.cache.policy", "gateway.forwarder", "gateway.clock", "gateway.traffic.cors"} <= names


def test_the_order_refuses_upward_and_sideways_imports() -> None:
    assert allowed("gateway.observe.stats", "gateway.redis.link")
    assert allowed("gateway.errors", "gateway.messages")  # leaves among themselves
    assert allowed("gateway.forwarder", "gateway.traffic.guard")
    assert not allowed("gateway.redis.link", "gateway.cache.store")  # upward
    assert not allowed("gateway.traffic.ratelimit", "gateway.cache.policy")  # sideways
    assert not allowed("gateway.config.settings", "gateway.redis.link")
