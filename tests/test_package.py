"""The pip route of the README, from a clean venv: build the wheel, install torch then the wheel, run the one
documented extra command, and `lasr reproduce --preset smoke` from a folder outside the repository (the route is
taken once per run by conftest's `installed_study`, whose study test_study.py checks in turn)."""
import json, zipfile
import pandas as pd
from lasr.core import PASST_INSTALL
from conftest import ROOT, run_as_user, succeeded

def test_wheel_in_clean_venv_reproduces_smoke(installed_study):
    s = installed_study
    names = zipfile.ZipFile(s.wheel).namelist()
    assert {"lasr/study/run.ipynb", "lasr/study/table1.ipynb", "lasr/study/table2.ipynb", "lasr/cli.py"} <= set(names), names
    # before the extra command: a one-line message naming it, never a traceback
    r = s.before_extra
    assert r.returncode == 2 and PASST_INSTALL in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert PASST_INSTALL in (ROOT / "README.md").read_text(), "the README must document the extra command"
    assert s.synth.returncode == 0 and "corpus written to" in s.synth.stdout, s.synth.stderr[-3000:]
    out = s.work / "reports" / "smoke"
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.clips) == [8, 8] and list(t1.queries) == [40, 40]   # the smoke study's corpus: 8 evaluation clips
    run = out / "runs" / t1.run[0]
    assert (run / "run" / "best.json").exists() and (out / "table1.png").exists() and (out / "table2.png").exists()
    # the package ran, not this checkout: its lasr lives in the venv and its notebooks came from the wheel
    where = succeeded(run_as_user([s.python, "-c", "import lasr; print(lasr.__file__)"], cwd=s.work)).stdout
    assert str(s.venv) in where, where
    for t in ("table1", "table2"):
        nb = json.loads((out / f"{t}.ipynb").read_text())
        assert nb["metadata"]["papermill"]["input_path"] == f"lasr/study/{t}.ipynb"
    for f in (out / "table1.ipynb", out / "table1.md", run / "run.ipynb", run / "result.json"):   # portable
        assert str(s.tmp) not in f.read_text(), f
