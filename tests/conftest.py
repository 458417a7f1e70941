"""Shared test setup.

- Every test runs with empty model caches (none may read, or depend on, the torch hub or Hugging Face cache of its
  machine) and lasr's data caches in a temporary folder, never the user's ~/.cache/lasr.
- `lasr(...)` runs the installed `lasr` command in a process of its own (for what needs the process boundary:
  Ctrl-C, killed runs, DDP ranks, the console script itself); the `cli` fixture runs `lasr.cli.main` in this
  process (for exit codes, messages and help, where a process adds only a torch import).
- `smoke_corpus` is a small embedded corpus and `untrained_checkpoint` the smoke model with random weights, each
  made once per pytest run and shared by the xdist workers (a folder named by the controller, a file lock).
- `installed_study` takes the README's pip route once per pytest run (the wheel in a clean venv) and runs the smoke
  study with it: test_package.py checks the route, test_study.py the study, test_launch.py and test_study_rows.py
  compare with its tables or start from its runs.
Tests import the helpers with `from conftest import lasr, ...` (pytest puts tests/ on sys.path).
"""
import atexit, fcntl, json, os, shutil, subprocess, sys, tempfile
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

if "LASR_CACHE" not in os.environ:
    os.environ["LASR_CACHE"] = tempfile.mkdtemp(prefix="lasr-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LASR_CACHE"], ignore_errors=True)

_CACHE_VARS = ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE")
SHARED = "LASR_TEST_SHARED"   # folder of what is made once per pytest run (set by the controller, seen by workers)
_saved: dict = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "alone: needs most of the machine's memory; `make test` runs it after the others, not beside them")
    if not hasattr(config, "workerinput") and SHARED not in os.environ:   # the controller (or a run without xdist)
        os.environ[SHARED] = tempfile.mkdtemp(prefix="lasr-test-shared-")
        _saved["shared"] = os.environ[SHARED]
    if hasattr(config, "workerinput") and "OMP_NUM_THREADS" not in os.environ:
        # an xdist worker: it and the processes it starts get their share of the cores, rather than each torch
        # process running a thread per core while the other worker's threads wait for the same cores
        n = max(1, (os.cpu_count() or 1) // int(config.workerinput.get("workercount", 1)))
        os.environ["OMP_NUM_THREADS"] = str(n)
        if "torch" in sys.modules: sys.modules["torch"].set_num_threads(n)
    d = tempfile.mkdtemp(prefix="lasr-empty-caches-")
    _saved.update(dir=d, env={k: os.environ.get(k) for k in _CACHE_VARS})
    # subprocesses (the `lasr` command) inherit the variables; this process gets them before torch or
    # huggingface_hub read them, and directly where they were imported already
    os.environ.update(TORCH_HOME=f"{d}/torch", HF_HOME=f"{d}/hf", HF_HUB_CACHE=f"{d}/hf/hub")
    if "torch" in sys.modules: sys.modules["torch"].hub.set_dir(f"{d}/torch/hub")
    if "huggingface_hub.constants" in sys.modules: sys.modules["huggingface_hub.constants"].HF_HUB_CACHE = f"{d}/hf/hub"


def pytest_unconfigure(config):
    for k, v in _saved.get("env", {}).items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v
    if _saved.get("dir"): shutil.rmtree(_saved["dir"], ignore_errors=True)
    if _saved.get("shared"):
        os.environ.pop(SHARED, None)
        # the pip route's venv and study are tens of thousands of files: a process of their own removes them, so that the
        # next command (make's next pytest stage) need not wait
        subprocess.Popen(["rm", "-rf", _saved["shared"]], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---------------------------------------------------------------- the `lasr` command
LASR = Path(sys.executable).parent/"lasr"   # the installed console script
_LAUNCHER = {"LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def lasr_env(threads: int | None = None, # OMP_NUM_THREADS of the child; None = inherited
             env: dict | None = None,    # base environment; None = this process'
            ) -> dict:
    "Environment of a `lasr` child: no inherited launcher (DDP rank) variables."
    out = {k: v for k, v in (os.environ if env is None else env).items() if k not in _LAUNCHER}
    if threads is not None: out["OMP_NUM_THREADS"] = str(threads)
    return out


def lasr(*args,                   # the command line after `lasr`; paths and numbers are turned into strings
         env: dict | None = None, threads: int | None = None, timeout: float = 600, cwd=None,
        ) -> subprocess.CompletedProcess:
    "Run the installed `lasr` command; stdout and stderr captured as text."
    return subprocess.run([str(LASR), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=lasr_env(threads, env))


def lasr_popen(*args, env: dict | None = None, threads: int | None = None, **kw) -> subprocess.Popen:
    "Start the installed `lasr` command without waiting (to interrupt or kill it); `kw` go to `subprocess.Popen`."
    return subprocess.Popen([str(LASR), *map(str, args)], env=lasr_env(threads, env), **kw)


@pytest.fixture
def cli(capsys):
    "Run `lasr.cli.main(argv)` in this process: `cli(*args)` gives `.returncode`, `.stdout`, `.stderr` as `lasr` would."
    from lasr.cli import main
    def run(*args):
        capsys.readouterr()
        try: code = main([str(a) for a in args])
        except SystemExit as e:   # argparse: --help, --version (0) and usage errors (2)
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)
    return run


# ---------------------------------------------------------------- made once per pytest run
@contextmanager
def _locked(name: str):
    "Hold the run's lock named `name` (one holder at a time across xdist workers); yields the shared folder."
    root = Path(os.environ[SHARED])
    with open(root/f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try: yield root
        finally: fcntl.flock(f, fcntl.LOCK_UN)


def shared_folder(name: str, build) -> Path:
    "The folder SHARED/name, written once per pytest run by `build(folder)` in whichever process asks first."
    with _locked(name) as root:
        out, done = root/name, root/f".{name}.done"
        if not done.exists():                       # first ask, or an earlier build failed half-way
            shutil.rmtree(out, ignore_errors=True)
            build(out)
            done.touch()
        return out


SMOKE_CORPUS = dict(n_dev=16, n_val=8, n_eval=16, seed=5, long_fraction=0.0)


@pytest.fixture(scope="session")
def smoke_corpus() -> Path:
    """A small embedded corpus (16 development, 8 validation, 16 evaluation clips of at most 12 s: the smoke preset
    reads them whole), shared by every test of the run: read it, never change it (copy it first)."""
    from lasr.synth import synth_corpus
    return shared_folder("smoke-corpus", lambda out: synth_corpus(out, progress=False, **SMOKE_CORPUS))


def untrained_checkpoint(dest: Path,   # run folder to write (it gets best.safetensors, best.json)
                         *overrides: str, # `part.field=value` changes to the smoke preset
                        ) -> Path:
    """A run folder holding the smoke model with random weights (seed 0) as its best checkpoint, copied from one
    saved once per pytest run for these overrides: for tests that compare two paths through the same weights."""
    import hashlib
    key = hashlib.sha1("\n".join(overrides).encode()).hexdigest()[:10]
    def build(out: Path):
        import torch
        from lasr.core import get_preset
        from lasr.model import create_model
        from lasr.train import save_checkpoint
        cfg = get_preset("smoke", *overrides)
        with torch.random.fork_rng():               # the same weights every run; this process' RNG untouched
            torch.manual_seed(0)
            model = create_model(cfg, load_weights=False)
        save_checkpoint(model, out/"best", cfg)
    src = shared_folder(f"untrained-smoke-{key}", build)
    shutil.copytree(src, dest, dirs_exist_ok=True)  # a copy: evaluate writes its embeddings and figures next to it
    return Path(dest)


# ---------------------------------------------------------------- the pip route and the smoke study it runs
ROOT = Path(__file__).resolve().parents[1]
TORCH = "torch==2.13.0"   # the CPU wheel these machines carry (as the Makefile installs it)


def user_env() -> dict:
    "The environment of a user's shell: nothing pointing at this checkout or at the test's own venv."
    # (nor PYTHONDONTWRITEBYTECODE, set on some CI images: with it every process of the venv, whose install skips
    # compiling, would compile torch again)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not Path(p, "python").resolve() == Path(sys.executable).resolve())
    return env


def run_as_user(args, cwd, timeout=600) -> subprocess.CompletedProcess:
    "Run a command in a user's environment (`user_env`)."
    return subprocess.run([str(a) for a in args], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout)


def succeeded(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def source_copy(dest: Path) -> Path:
    "The files a clone would have (tracked and new, not ignored), without the committed reports."
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for n in names:
        if n.startswith("reports/") or not (ROOT/n).is_file(): continue
        (dest/n).parent.mkdir(parents=True, exist_ok=True)
        (dest/n).write_bytes((ROOT/n).read_bytes())
    return dest


def _take_pip_route(tmp: Path):
    """The README's pip route in `tmp`: this checkout's wheel installed after torch in a clean venv, `lasr` tried
    before and after the one documented extra command, then the whole smoke study (`lasr reproduce --preset smoke`,
    both tables) run by it in a folder outside the repository. Every command's result goes to tmp/route.json, also
    when one fails (so that no other worker takes the route again)."""
    from lasr.core import PASST_INSTALL
    tmp.mkdir(parents=True)
    steps = {}
    def run(name, args, cwd, timeout=600, check=True):
        r = run_as_user(args, cwd=cwd, timeout=timeout)
        steps[name] = dict(args=[str(a) for a in r.args], returncode=r.returncode, stdout=r.stdout, stderr=r.stderr)
        if check: succeeded(r)
    py, cmd, work = tmp/"venv"/"bin"/"python", tmp/"venv"/"bin"/"lasr", tmp/"elsewhere"
    pip = [py, "-m", "pip", "install", "-q", "--no-compile"]   # bytecode only of what is imported, when it is
    try:
        src = source_copy(tmp/"src")
        run("wheel", [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp/"dist", src], tmp)
        wheel, = (tmp/"dist").glob("lasr-*.whl")
        run("venv", [sys.executable, "-m", "venv", tmp/"venv"], tmp)
        run("torch", [*pip, TORCH], tmp)
        run("lasr", [*pip, wheel], tmp)
        work.mkdir()   # outside the repository: nothing may come from the checkout
        run("describe", [cmd, "describe", "--preset", "smoke"], work, check=False)
        run("passt", [*pip, *PASST_INSTALL.split()[2:]], tmp)
        run("synth", [cmd, "synth", "tiny", "--n-dev", "2", "--n-val", "1", "--n-eval", "1"], work, check=False)
        run("study", [cmd, "reproduce", "--preset", "smoke", "--out", "reports"], work, timeout=1800)
    except (AssertionError, subprocess.TimeoutExpired, ValueError) as e:
        steps["error"] = f"{type(e).__name__}: {e}"
    (tmp/"route.json").write_text(json.dumps(steps))


@pytest.fixture(scope="session")
def installed_study():
    """The pip route and the smoke study it ran (`_take_pip_route`), taken once per pytest run by whichever worker
    asks first: test_package.py checks the route, test_study.py the study, test_launch.py and test_study_rows.py
    compare with its tables or start from its runs (so the study's five runs are trained once, by the installed
    package). Read it, never change it: copy what a test changes (`study_copy`)."""
    tmp = shared_folder("pip-route", _take_pip_route)
    steps = json.loads((tmp/"route.json").read_text())
    if "error" in steps: pytest.fail(f"the pip route failed: {steps.pop('error')}\n{json.dumps(steps)[-4000:]}", pytrace=False)
    r = {k: subprocess.CompletedProcess(v["args"], v["returncode"], v["stdout"], v["stderr"]) for k, v in steps.items()}
    venv = tmp/"venv"
    return SimpleNamespace(tmp=tmp, wheel=next((tmp/"dist").glob("lasr-*.whl")), venv=venv, python=venv/"bin"/"python",
                           lasr=venv/"bin"/"lasr", work=tmp/"elsewhere", before_extra=r["describe"], synth=r["synth"],
                           study=r["study"])


def study_copy(study: SimpleNamespace, # `installed_study`
               dest: Path,             # folder to create: it gets reports/ (the smoke tables, runs and corpus)
              ) -> Path:
    "A copy of the installed study's reports/ in `dest`, for a test that adds or removes runs."
    shutil.copytree(study.work/"reports", dest/"reports")
    return dest


# ---------------------------------------------------------------- the order of the files in two xdist workers
# `make test` runs `-n 2 --dist loadfile --no-loadscope-reorder`: one file at a time per worker (its module fixtures
# are made once), except that test_package.py and test_study.py, which check the pip route, form one unit of work;
# the units start in the order below, so that the two workers end together: one worker takes the pip route while the
# other runs test_ddp_train.py, test_paper_inputs.py and then test_launch.py, whose first test needs no other study
# and whose next ones compare with the pip route's tables: by then it is ready (with test_launch.py first, that
# worker had a minute to wait for it, one core idle); test_study_rows.py, which starts from its runs, comes later.
# (xdist's own `--dist loadgroup` does not group under pytest 9, which no longer reads `item._nodeid`.)
GROUPS = {"test_package.py": "pip-route", "test_study.py": "pip-route"}
SLOW_FIRST = ("pip-route", "test_ddp_train.py", "test_paper_inputs.py", "test_launch.py", "test_train.py",
              "test_study_rows.py", "test_cli.py", "test_index.py", "test_model_ddp.py", "test_synth.py")


def _group(path: str) -> str:
    "The unit of work of a test file (its path or name): its name, or the group it shares."
    name = path.rsplit("/", 1)[-1]
    return GROUPS.get(name, name)


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(_group(item.path.name), len(rank)))


def pytest_xdist_make_scheduler(config, log):
    "With --dist loadfile: xdist's scheduler by file, with the groups above."
    if config.getvalue("dist") != "loadfile": return None
    from xdist.scheduler import LoadScopeScheduling
    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str: return _group(nodeid.split("::", 1)[0])
    return ByGroup(config, log)
