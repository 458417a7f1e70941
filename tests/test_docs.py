"The project documents itself: links inside the repository resolve, the LICENSE and settings agree."
import json, re, subprocess
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")

def _slug(heading: str) -> str:
    "GitHub's (and Quarto's) anchor of a markdown heading."
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")

def _markdown(p: Path) -> str:
    if p.suffix != ".ipynb": return p.read_text()
    return "\n".join("".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "markdown")

def _anchors(p: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.+)$", _markdown(p), re.M)}

def _committed(*pats) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", *pats], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [ROOT / n for n in out.splitlines() if (ROOT / n).is_file()]

def test_slug():
    assert _slug("Offline-first loading") == "offline-first-loading" and _slug("The system") == "the-system"

def test_relative_links_resolve():
    docs = _committed("README.md", "nbs/*.ipynb", "nbs/study/*.ipynb", "reports/README.md")
    broken = []
    for p in docs:
        for target in LINK.findall(_markdown(p)):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"): continue   # web links, same-page anchors
            path, _, anchor = target.partition("#")
            f = (p.parent / path).resolve()
            if not f.exists(): broken.append(f"{p.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and f.suffix in (".ipynb", ".md") and anchor not in _anchors(f):
                broken.append(f"{p.relative_to(ROOT)}: {target} (no heading '{anchor}' in {path})")
    assert not broken, broken

def test_no_reference_to_files_outside_the_repository():
    hits = [f"{p.relative_to(ROOT)}" for p in _committed("README.md", "nbs", "lasr", "tests", "reports/README.md")
            if p.suffix in (".py", ".ipynb", ".md") and p.name != "test_docs.py" and "DESIGN §" in p.read_text()]
    assert not hits, f"'DESIGN §' refers to a file that is not in the repository: {hits}"

def test_license_settings_and_manifest_agree():
    cfg = ConfigParser(delimiters=["="]); cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    assert d["license"] == "apache2" and "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "Version 2.0" in (ROOT / "LICENSE").read_text()[:200]
    assert (ROOT / d["nbs_path"] / d["readme_nb"]).exists(), "settings.ini readme_nb names a missing notebook"
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        if line.startswith("include "): assert (ROOT / line.split()[1]).exists(), line

# nbdev_proc_nbs (the step before quarto) runs every cell that imports something, alone: a cell that also
# computes fails there. This is the same rule, read statically (nbdev_proc_nbs itself first tries to
# install quarto and `pip install -e` the checkout, so a test must not call it).
PENDING: set = set()   # (notebook, cell id or None) exempt from the rule; none are

def _mixed_import_cells(nb: Path) -> list[str]:
    import ast
    bad = []
    for c in json.loads(nb.read_text())["cells"]:
        s = "".join(c["source"])
        if c["cell_type"] != "code" or re.search(r"^#\|\s*(export|exports|exporti|exec_doc)\b|^#\|\s*eval:\s*false", s, re.M):
            continue
        nodes = list(ast.walk(ast.parse("\n".join("pass" if l.startswith(("%", "!")) else l for l in s.splitlines()))))
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in nodes) and any(isinstance(n, (ast.Expr, ast.Assign)) for n in nodes):
            bad.append(c.get("id", "?"))
    return bad

def test_imports_in_cells_of_their_own():
    "nbdev_proc_nbs can process the notebooks: no cell mixes imports with other code."
    for nb in sorted((ROOT / "nbs").glob("*.ipynb")):
        if (nb.stem, None) in PENDING: continue
        bad = [i for i in _mixed_import_cells(nb) if (nb.stem, i) not in PENDING]
        assert not bad, f"{nb.name}: cells {bad} mix imports with code; put the imports in a cell of their own"

def test_mixed_import_cells_are_found(tmp_path):
    nb = {"cells": [{"cell_type": "code", "id": "a", "source": ["import os\n", "x = os.sep"]},
                    {"cell_type": "code", "id": "b", "source": ["import os"]},
                    {"cell_type": "code", "id": "c", "source": ["#| export\n", "import os\n", "x = 1"]}]}
    (tmp_path / "n.ipynb").write_text(json.dumps(nb))
    assert _mixed_import_cells(tmp_path / "n.ipynb") == ["a"]
