"""Shared test setup: every test runs with empty model caches (none may read, or depend on, the torch hub or
Hugging Face cache of its machine) and lasr's data caches in a temporary folder, never the user's ~/.cache/lasr."""
import atexit, os, shutil, sys, tempfile

if "LASR_CACHE" not in os.environ:
    os.environ["LASR_CACHE"] = tempfile.mkdtemp(prefix="lasr-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LASR_CACHE"], ignore_errors=True)

_CACHE_VARS = ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE")
_saved: dict = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "alone: needs most of the machine's memory; `make test` runs it after the others, not beside them")
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
