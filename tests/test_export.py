"`lasr/` must be exactly what `nbdev_export` makes from `nbs/` (never hand-edited, never stale)."
import filecmp, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def _py_files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*.py") if "__pycache__" not in p.parts}

def test_lasr_matches_fresh_export(tmp_path):
    for name in ("settings.ini", "setup.py", "README.md"): shutil.copy(ROOT/name, tmp_path/name)
    shutil.copytree(ROOT/"nbs", tmp_path/"nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (tmp_path/"lasr").mkdir()
    code = "from nbdev.doclinks import nbdev_export; nbdev_export()"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True)
    fresh, committed = tmp_path/"lasr", ROOT/"lasr"
    assert _py_files(fresh) == _py_files(committed), "modules differ: run nbdev_export and commit lasr/"
    stale = [f for f in sorted(_py_files(fresh)) if not filecmp.cmp(fresh/f, committed/f, shallow=False)]
    assert not stale, f"lasr/ is stale for {stale}: run nbdev_export (never edit lasr/*.py by hand)"
