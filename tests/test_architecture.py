"""The shape of the package: no import cycles among its modules, and files of a readable size.

A cycle makes the import order matter (whichever module is imported first sees the other
half-initialised) and leaves no module that can be read, or tested, without the
rest of the cycle; so every import counts, including ones inside functions and under
``TYPE_CHECKING``, since an import moved inside a function still ties the two
modules together. The graph is read from the source with ``ast``: nothing is imported,
so the test runs without torch or PyAV doing any work.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "sepconv_cli"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 600
# A command parses options, calls the library and prints; more than this means library work crept in.
MAX_COMMAND_LINES = 250
# Modules at the bottom floor: what they may import from the package (nothing above them).
BOTTOM = {
    "sepconv_cli.errors": set(),
    "sepconv_cli.video_types": {"sepconv_cli.errors"},
    "sepconv_cli.evaluation.method": {"sepconv_cli.errors"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved."""
    if not node.level:
        return node.module or ""
    # A package's __init__ is its own level-1 anchor; a plain module's is its package.
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that ``name`` imports anywhere in its source.

    ``from pkg import sub`` counts as an import of ``pkg.sub`` when that is a module
    (not of ``pkg``: every package's ``__init__`` importing its own modules would
    otherwise be a cycle with each of them); a name that is not a module counts as
    an import of the module it comes from.
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = _base(name, path, node)
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}"
                elif base in known:
                    yield base


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: set(imports(name, path, known)) - {name} for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None: a depth-first search that stops at
    the first edge back to a module still on its path."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                stack.pop()
            elif target in on_path:
                return [*path[path.index(target):], target]
            elif target not in done:
                path.append(target)
                on_path.add(target)
                stack.append(iter(sorted(graph[target])))
    return None


def all_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """A cycle through each tangle of modules: found, then one of its edges dropped, until none
    is left, so that one failure lists every cycle to untie, not only the first."""
    graph = {name: set(targets) for name, targets in graph.items()}
    cycles = []
    while (cycle := find_cycle(graph)) is not None:
        cycles.append(cycle)
        graph[cycle[-2]].discard(cycle[-1])
    return cycles


def test_the_checker_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert len(all_cycles(graph)) == 2
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    # A lazy import inside a function (build_methods) and a relative one (ext's __init__).
    assert "sepconv_cli.evaluation.rife" in graph["sepconv_cli.evaluation.methods"]
    assert "sepconv_cli.ext.separable_conv" in graph["sepconv_cli.ext"]
    assert "sepconv_cli.scenes" in graph["sepconv_cli.pipeline"]  # from sepconv_cli import scenes


def test_no_import_cycles() -> None:
    cycles = all_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_bottom_floor_imports_nothing_above_it() -> None:
    graph = import_graph()
    above = {name: sorted(graph[name] - allowed) for name, allowed in BOTTOM.items() if graph[name] - allowed}
    assert not above, f"bottom-floor modules import from above: {above}"


def test_moved_names_are_still_importable_from_their_old_modules() -> None:
    from sepconv_cli import video, video_types
    from sepconv_cli.evaluation import method, methods

    assert video.VideoInfo is video_types.VideoInfo and video.Frame is video_types.Frame
    assert methods.Method is method.Method and methods.to_uint8 is method.to_uint8
    assert methods._to_tensor is method.to_tensor


def long_files() -> dict[str, int]:
    counts = {str(path.relative_to(ROOT.parent)): len(path.read_text(encoding="utf-8").splitlines())
              for path in sorted(ROOT.rglob("*.py"))}
    return {path: count for path, count in counts.items() if count > MAX_LINES}


def test_no_file_is_over_600_lines() -> None:
    assert not long_files(), f"files over {MAX_LINES} lines: {long_files()}"


def test_every_command_module_is_thin() -> None:
    counts = {path.name: len(path.read_text(encoding="utf-8").splitlines())
              for path in sorted((ROOT / "commands").glob("*.py"))}
    assert "interpolate.py" in counts
    thick = {name: count for name, count in counts.items() if count >= MAX_COMMAND_LINES}
    assert not thick, f"command modules of {MAX_COMMAND_LINES} lines or more: {thick}"


def test_the_run_core_imports_neither_click_nor_the_commands() -> None:
    graph = import_graph()
    for name in ("sepconv_cli.outputs", "sepconv_cli.runs", "sepconv_cli.streams"):
        assert not {target for target in graph[name] if target.startswith("sepconv_cli.commands")}, name
        tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "click" not in imported, name


# The floors of docs/architecture.md, bottom (0) to top (3): a module may import its own
# floor and those below. Prefixes name packages; the longest matching prefix decides.
FLOORS = {
    "errors": 0, "video_types": 0, "evaluation.method": 0, "ext": 0, "flow": 0, "images": 0, "metrics": 0,
    "scenes": 0, "serialization": 0, "overlap": 0, "motion_types": 0,
    "models": 1, "losses": 1, "data": 1, "video": 1, "streams": 1, "frame_kinds": 1, "timespan": 1,
    "sequences": 1, "duplicates": 1, "neighbourhood": 1, "frame_cache": 1,
    "engine": 2, "schedules": 2, "pairing": 2, "sinks": 2, "pipeline": 2, "outputs": 2, "runs": 2, "training": 2,
    "adaptation": 2, "evaluation": 2,
    "commands": 3, "cli": 3, "__main__": 3,
}


def floor(module: str) -> int | None:
    parts = module.split(".")[1:]  # without the package name
    for size in range(len(parts), 0, -1):
        level = FLOORS.get(".".join(parts[:size]))
        if level is not None:
            return level
    return None


def test_every_module_has_a_floor_and_imports_no_floor_above_its_own() -> None:
    graph = import_graph()
    unplaced = sorted(m for m in graph if m != PACKAGE and floor(m) is None)
    assert not unplaced, f"modules without a floor in FLOORS (and docs/architecture.md): {unplaced}"
    upward = sorted(f"{a} (floor {floor(a)}) -> {b} (floor {floor(b)})" for a, targets in graph.items() for b in targets
                    if a != PACKAGE and b != PACKAGE and floor(b) > floor(a))  # type: ignore[operator]
    assert not upward, "imports that run upwards: " + "; ".join(upward)


MAX_FUNCTION_LINES = 80


def test_no_function_is_over_80_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({length} lines)")
    assert not long, "functions over 80 lines: " + ", ".join(long)
