"Shared test setup: caches go to a temporary folder, never to the user's ~/.cache/lasr."
import atexit, os, shutil, tempfile

if "LASR_CACHE" not in os.environ:
    os.environ["LASR_CACHE"] = tempfile.mkdtemp(prefix="lasr-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LASR_CACHE"], ignore_errors=True)
