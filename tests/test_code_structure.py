"""The package stays one a newcomer can hold (issue 37): short functions with few parameters, no
import circle, no private name used across subpackages or by the pipelines and benchmarks, one
``psnr`` and one atomic save, and every public function documents its arguments. Read from the
source (``ast``), nothing imported."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "geocompress"
MAX_LINES, MAX_PARAMS = 80, 8


def _module(f: Path) -> str:
    parts = list(f.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = sorted(PKG.rglob("*.py"))
IS_PACKAGE = {_module(f): f.name == "__init__.py" for f in FILES}
TREES = {f: ast.parse(f.read_text(), str(f)) for f in FILES}


def _target(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if node.level == 0:
        return node.module or ""
    pkg = module.split(".") if IS_PACKAGE.get(module) else module.split(".")[:-1]
    pkg = pkg[:len(pkg) - (node.level - 1)]
    return ".".join(pkg + ([node.module] if node.module else []))


def _functions():
    for f, tree in TREES.items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield _module(f), n


def _n_params(n: ast.FunctionDef) -> int:
    a = n.args
    k = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
    return k - bool(a.args and a.args[0].arg in ("self", "cls"))


def test_no_function_is_over_80_lines_or_8_parameters():
    long = [f"{m}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for m, n in _functions()
            if n.end_lineno - n.lineno + 1 > MAX_LINES]
    many = [f"{m}:{n.name} ({_n_params(n)} parameters)" for m, n in _functions() if _n_params(n) > MAX_PARAMS]
    assert not long and not many, long + many


def test_no_import_circle_at_module_level():
    graph: dict[str, set[str]] = defaultdict(set)
    for f, tree in TREES.items():
        m = _module(f)
        for n in tree.body:
            if isinstance(n, ast.ImportFrom):
                t = _target(m, n)
                if not t.startswith("geocompress"):
                    continue
                subs = [f"{t}.{a.name}" for a in n.names if f"{t}.{a.name}" in IS_PACKAGE]
                graph[m].update(subs)
                if len(subs) < len(n.names) and t != m:
                    graph[m].add(t)
            elif isinstance(n, ast.Import):
                graph[m].update(a.name for a in n.names if a.name.startswith("geocompress."))
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(u: str, path: list[str]) -> list[str] | None:
        state[u] = 1
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return path[path.index(v):] + [v]
            if v not in state and (c := visit(v, path + [v])):
                return c
        state[u] = 2
        return None

    for m in sorted(graph):
        if m not in state and (circle := visit(m, [m])):
            pytest.fail("import circle: " + " -> ".join(circle))


def _private_imports(tree: ast.AST, module: str):
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom):
            t = _target(module, n)
            if t.startswith("geocompress"):
                for a in n.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        yield t, a.name


def test_no_private_name_crosses_a_subpackage_or_leaves_the_package():
    def sub(m: str) -> str:
        return m.split(".")[1] if m.count(".") else ""

    crossing = [f"{_module(f)} imports {t}.{name}" for f, tree in TREES.items()
                for t, name in _private_imports(tree, _module(f)) if sub(_module(f)) != sub(t)
                and t != "geocompress._compressai"]
    for folder in ("pipelines", "benchmarks"):
        for f in sorted((ROOT / folder).glob("*.py")):
            crossing += [f"{folder}/{f.name} imports {t}.{name}"
                         for t, name in _private_imports(ast.parse(f.read_text()), f.stem)]
    assert not crossing, crossing


def test_one_psnr_and_one_atomic_save():
    defs = defaultdict(list)
    for m, n in _functions():
        if n.name in ("psnr", "atomic_save", "_atomic_save"):
            defs[n.name.strip("_")].append(m)
    assert len(defs["psnr"]) == 1 and len(defs["atomic_save"]) == 1, dict(defs)


def test_every_public_function_documents_its_arguments():
    missing = []
    for f, tree in TREES.items():
        if any(p.startswith("_") and p != "__init__" for p in f.relative_to(PKG).with_suffix("").parts):
            continue  # a private module: its names are not public

        def visit(body, owner=""):
            for n in body:
                if isinstance(n, ast.ClassDef) and not n.name.startswith("_"):
                    if not ast.get_docstring(n):
                        missing.append(f"{_module(f)}:{n.name} (no docstring)")
                    visit(n.body, n.name + ".")
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and not n.name.startswith("_"):
                    if any(isinstance(d, ast.Name) and d.id == "property" for d in n.decorator_list):
                        continue
                    doc = ast.get_docstring(n)
                    takes = _n_params(n) > 0
                    if not doc:
                        missing.append(f"{_module(f)}:{owner}{n.name} (no docstring)")
                    elif takes and "Args:" not in doc:
                        missing.append(f"{_module(f)}:{owner}{n.name} (no Args:)")

        visit(tree.body)
    assert not missing, missing
