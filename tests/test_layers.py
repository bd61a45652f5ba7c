"""The layer contract in pyproject.toml ([tool.nlp-rnn.layers]): each floor of the package imports only
the floors below it, the tasks do not import one another, and no module imports itself in a cycle.
Every import counts, also one inside a function."""

import ast
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["nlp-rnn"]["layers"]
TOP = "api"  # the package's __init__ and __main__: above every floor


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str, floors: list[str]) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    if len(parts) >= 2 and parts[1] in floors and parts[1] != "core":
        return parts[1]
    return "core"


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported module of the package) for every import statement in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module.split(".")[
                    : len(module.split(".")) - node.level + (path.name == "__init__.py")
                ]
                base = ".".join(package + ([base] if base else []))
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in known:  # a.b.c where a.b is the module
                name = name.rpartition(".")[0]
            if name:
                found.append((node.lineno, name))
    return found


def unit(module: str, independent: list[str]) -> str | None:
    """The independent unit (a task module, or a task package and its modules) that `module` belongs to."""
    return next((u for u in independent if module == u or module.startswith(u + ".")), None)


def check(package: Path, floors: list[str], independent: list[str]) -> list[str]:
    """Every breach of the contract in the package folder `package`, one line each."""
    root = package.parent
    files = {module_name(p, root): p for p in package.rglob("*.py")}
    known = set(files)
    rank = {name: i for i, name in enumerate(floors)} | {TOP: len(floors)}
    problems, graph = [], {m: set() for m in files}
    for module, path in sorted(files.items()):
        mine = floor_of(module, floors)
        for line, target in imports_of(path, module, known):
            if target == module:
                continue
            graph[module].add(target)
            theirs = floor_of(target, floors)
            where = f"{path.relative_to(root)}:{line}"
            if target == package.name and mine != TOP:
                problems.append(f"{where}: {module} imports the package itself ({target})")
            elif rank[theirs] > rank[mine]:
                problems.append(f"{where}: {module} ({mine}) imports {target} ({theirs}), a floor above")
            elif unit(module, independent) and unit(target, independent) not in (
                None,
                unit(module, independent),
            ):
                problems.append(f"{where}: {module} imports {target}; tasks do not import one another")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_keeps_its_floors() -> None:
    problems = check(ROOT / "nlp_rnn", CONTRACT["floors"], CONTRACT["independent"])
    assert not problems, "\n".join(problems)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "nlp_rnn" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path / "nlp_rnn"


def test_an_upward_import_inside_a_function_is_caught(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "data.py": "def f():\n    from nlp_rnn.cli.app import main\n",
            "cli/__init__.py": "",
            "cli/app.py": "from nlp_rnn import data\nmain = 1\n",
            "tasks/__init__.py": "",
            "tasks/a.py": "from nlp_rnn.tasks import b\n",
            "tasks/b.py": "from nlp_rnn import data\n",
            "tasks/c/__init__.py": "from nlp_rnn.tasks.c import task\n",
            "tasks/c/task.py": "from nlp_rnn.tasks.c import cli\nfrom nlp_rnn.tasks.b import x\n",
            "tasks/c/cli.py": "",
        },
    )
    problems = check(package, CONTRACT["floors"], ["nlp_rnn.tasks.a", "nlp_rnn.tasks.b", "nlp_rnn.tasks.c"])
    assert any(
        "data.py:2: nlp_rnn.data (core) imports nlp_rnn.cli.app (cli), a floor above" in p for p in problems
    ), problems
    assert any(
        "nlp_rnn.tasks.a imports nlp_rnn.tasks.b; tasks do not import one another" in p for p in problems
    ), problems
    assert any(p.startswith("import cycle: nlp_rnn.cli.app -> nlp_rnn.data") for p in problems), problems
    # a task package's modules import each other freely, but not another task
    assert any("nlp_rnn.tasks.c.task imports nlp_rnn.tasks.b; tasks do not" in p for p in problems), problems
    assert len(problems) == 4, problems


def test_imports_down_the_floors_pass(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "__init__.py": "def load():\n    from nlp_rnn.tasks import base\n",
            "errors.py": "",
            "nn/__init__.py": "",
            "nn/model.py": "from nlp_rnn.errors import *\nfrom . import layer\n",
            "nn/layer.py": "",
            "tasks/__init__.py": "",
            "tasks/base.py": "import nlp_rnn.nn.model\nfrom nlp_rnn.nn import layer\n",
        },
    )
    assert check(package, CONTRACT["floors"], []) == []
