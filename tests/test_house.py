"""The floors of the package (nbs/index.ipynb, "How the package is built"): every import, at the top of a module or
inside a function, goes to a lower floor; nothing imports the command line; no module takes another's _private name;
`import lasr.core` loads no torch."""
import ast, json, re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(p.stem for p in (ROOT / "lasr").glob("*.py") if not p.stem.startswith("_"))


def floors() -> dict[str, int]:
    "Module -> floor, read from the table in nbs/index.ipynb."
    cells = json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    text = next("".join(c["source"]) for c in cells if "## How the package is built" in "".join(c["source"]))
    out = {}
    for floor, mods in re.findall(r"^\| (\d+) \| ([^|]+) \|", text, flags=re.M):
        for m in re.findall(r"`(\w+)`", mods): out[m] = int(floor)
    return out


def imports(module: str) -> list[tuple[str, str, int]]:
    "(imported lasr module, imported name or '', line) for every import statement of lasr/<module>.py."
    tree = ast.parse((ROOT / "lasr" / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], "", node.lineno) for a in node.names if a.name.startswith("lasr.")]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level == 1: target = f"lasr.{target}" if target else "lasr"
            if target == "lasr":    # `from lasr import __version__` (the package) or `from . import x` (a module)
                out += [(a.name, "", node.lineno) for a in node.names if a.name in MODULES]
            elif target.startswith("lasr."):
                out += [(target.split(".")[1], a.name, node.lineno) for a in node.names]
    return out


def test_floors_table_names_every_module():
    assert sorted(floors()) == MODULES


def test_imports_go_down_only():
    f = floors()
    bad = [f"{m}:{line} imports {t} (floor {f[m]} -> {f[t]})" for m in MODULES for t, _, line in imports(m)
           if t != m and f[t] >= f[m]]
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_command_line():
    bad = [f"{m}:{line}" for m in MODULES for t, _, line in imports(m) if t == "cli" and m != "cli"]
    assert not bad, bad


def test_no_private_names_across_modules():
    bad = [f"{m}:{line} takes {t}.{name}" for m in MODULES for t, name, line in imports(m)
           if t != m and name.startswith("_")]
    assert not bad, "\n".join(bad)
    # the tests too use public names only
    for p in sorted((ROOT / "tests").glob("*.py")):
        found = re.findall(r"from lasr\.(\w+) import ([^\n]+)", p.read_text())
        priv = [(mod, n.strip()) for mod, names in found for n in names.strip("()").split(",") if n.strip().startswith("_")]
        assert not priv, (p.name, priv)


def test_core_loads_without_torch():
    r = subprocess.run([sys.executable, "-c", "import lasr.core, sys; assert 'torch' not in sys.modules, 'torch loaded'"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_checks_catch_a_circle(tmp_path, monkeypatch):
    "The import walk sees an import inside a function (the kind that made the old circles)."
    src = "def f():\n    from lasr.cli import main\n    from .train import _private\n"
    (tmp_path / "lasr").mkdir(); (tmp_path / "lasr" / "core.py").write_text(src)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports("core") == [("cli", "main", 2), ("train", "_private", 3)]
