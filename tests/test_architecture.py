"""The core's shape: dependencies run one way (data -> render -> mapping -> semantics -> session), small modules."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clipgs"
# Each layer may import itself and the layers before it, never one after it.
LAYERS = [
    {"clipgs.errors", "clipgs.settings", "clipgs.geometry", "clipgs.native", "clipgs.openmp"},
    {"clipgs.data"},
    {"clipgs.render"},
    {"clipgs.mapping"},
    {"clipgs.eval"},
    {"clipgs.semantics"},
    {"clipgs.parameters", "clipgs.session", "clipgs.demo", "clipgs.viewer", "clipgs.cli", "clipgs"},
]


def unit_of(module: str) -> str:
    """The layer unit of a module: its subpackage (clipgs.mapping.mapper -> clipgs.mapping) or itself."""
    parts = module.split(".")
    if len(parts) >= 2 and (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return ".".join(parts[:2]) if len(parts) >= 2 else module


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every clipgs module a file imports, at the top or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("clipgs")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("clipgs") and node.level == 0:
            out.add(node.module)
    return out


def dependency_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        me = unit_of(module_name(path))
        graph.setdefault(me, set()).update(unit_of(m) for m in imports_of(path) if unit_of(m) != me)
    return graph


def test_layers_import_only_earlier_layers():
    rank = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
    graph = dependency_graph()
    assert set(graph) <= set(rank), f"new package units need a layer: {set(graph) - set(rank)}"
    wrong = sorted((a, b) for a, deps in graph.items() for b in deps if rank[b] > rank[a])
    assert wrong == [], f"imports against the layering: {wrong}"


def test_no_package_level_import_cycle():
    graph = dependency_graph()
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, nxt]))
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_mapper_knows_nothing_of_semantics_or_ros():
    for path in (PACKAGE / "mapping").rglob("*.py"):
        assert "clipgs.semantics" not in path.read_text(), path
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "import rclpy" not in text and "from rclpy" not in text, path


def test_modules_stay_small():
    assert len((PACKAGE / "mapping" / "mapper.py").read_text().splitlines()) < 250
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
             for folder in ("clipgs", "clipgs_ros", "tests", "benchmarks") for p in (ROOT / folder).rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 400} == {}


def test_the_public_api_imports_from_the_top():
    import clipgs

    for name in clipgs.__all__:
        assert getattr(clipgs, name) is not None, name
    from clipgs import GaussianMap, IncrementalMapper, MapperConfig, MappingSession, open_dataset, query_map, rasterize

    assert all(callable(x) for x in (GaussianMap, IncrementalMapper, MapperConfig, MappingSession, open_dataset,
                                     query_map, rasterize))


def test_the_readme_library_example_runs(synth_dir, capsys):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Library"):]
    code = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python"))]
    exec(compile(code.replace('"demo_out/scene"', repr(str(synth_dir))), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith("[array([") or printed.strip() == "[]", printed
