"""The pip route of the README, from a clean venv: build the wheel, install torch then the wheel, run the one
documented extra command, and `lasr reproduce --preset smoke` from a folder outside the repository."""
import json
import pandas as pd, os, subprocess, sys, zipfile
from pathlib import Path
from lasr.core import PASST_INSTALL

ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"   # the CPU wheel these machines carry (as the Makefile installs it)

def _env() -> dict:
    "The environment of a user's shell: nothing pointing at this checkout or at the test's own venv."
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not Path(p, "python").resolve() == Path(sys.executable).resolve())
    return env

def _run(args, cwd, timeout=600):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    return r

def _ok(r):
    assert r.returncode == 0, f"{r.args}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r

def _source_copy(dest: Path) -> Path:
    "The files a clone would have (tracked and new, not ignored), without the committed reports."
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for n in names:
        if n.startswith("reports/") or not (ROOT / n).is_file(): continue
        (dest / n).parent.mkdir(parents=True, exist_ok=True)
        (dest / n).write_bytes((ROOT / n).read_bytes())
    return dest

def test_wheel_in_clean_venv_reproduces_smoke(tmp_path):
    src = _source_copy(tmp_path / "src")
    _ok(_run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", src],
             cwd=tmp_path))
    wheel, = (tmp_path / "dist").glob("lasr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"lasr/study/run.ipynb", "lasr/study/table1.ipynb", "lasr/study/table2.ipynb", "lasr/cli.py"} <= set(names), names

    venv = tmp_path / "venv"
    _ok(_run([sys.executable, "-m", "venv", venv], cwd=tmp_path))
    py, lasr = venv / "bin" / "python", venv / "bin" / "lasr"
    pip = [py, "-m", "pip", "install", "-q", "--no-compile"]   # no .pyc: the venv is thrown away
    _ok(_run([*pip, TORCH], cwd=tmp_path))
    _ok(_run([*pip, wheel], cwd=tmp_path))

    work = tmp_path / "elsewhere"   # outside the repository: nothing may come from the checkout
    work.mkdir()
    # before the extra command: a one-line message naming it, never a traceback
    r = _run([lasr, "describe", "--preset", "smoke"], cwd=work)
    assert r.returncode == 2 and PASST_INSTALL in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert PASST_INSTALL in (ROOT / "README.md").read_text(), "the README must document the extra command"
    _ok(_run([*pip, *PASST_INSTALL.split()[2:]], cwd=tmp_path))

    _ok(_run([lasr, "synth", "corpus", "--n-dev", "16", "--n-val", "4", "--n-eval", "4", "--seed", "2"], cwd=work))
    r = _ok(_run([lasr, "reproduce", "--preset", "smoke", "--data-root", "corpus", "--out", "reports", "--quiet",
                  "--only", "table1"], cwd=work))
    out = work / "reports" / "smoke"
    t1 = pd.read_csv(out / "table1.csv")
    assert list(t1.clips) == [4, 4] and list(t1.queries) == [20, 20]
    run = out / "runs" / t1.run[0]
    assert (run / "run" / "best.json").exists() and (out / "table1.png").exists()
    # the package ran, not this checkout: its lasr lives in the venv and its notebooks came from the wheel
    where = _ok(_run([py, "-c", "import lasr; print(lasr.__file__)"], cwd=work)).stdout
    assert str(venv) in where, where
    nb = json.loads((out / "table1.ipynb").read_text())
    assert nb["metadata"]["papermill"]["input_path"] == "lasr/study/table1.ipynb"
    for f in (out / "table1.ipynb", out / "table1.md", run / "run.ipynb", run / "result.json"):   # portable
        assert str(tmp_path) not in f.read_text(), f
