"""Launchers (issue 23): `lasr reproduce --launcher slurm` on a real one-node SLURM cluster (Debian's slurm-wlm and
munge, started here in a temporary folder: munged, slurmctld, slurmd; no accounting daemon, so `sacct` answers
"accounting storage is disabled" and the launcher must tell states apart with squeue and its files), and
`--launcher local --jobs 2`. `make test` installs slurm-wlm and munge when they are missing (as root); where they
cannot be installed (not root) the SLURM tests are skipped with that reason."""
import json, os, re, shutil, socket, subprocess, time
from pathlib import Path

import pytest

from conftest import lasr

ROOT = Path(__file__).resolve().parents[1]
DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")
METRICS_ONLY = re.compile(r",[0-9.]+$", re.M)   # the CSVs' last column is each run's training time, in seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def _start_cluster(d: Path) -> dict:
    "munged, slurmctld and slurmd of a one-node cluster whose files all live in `d`; the environment that reaches it."
    for sub in ("state", "spool", "munge"): (d / sub).mkdir(parents=True)
    host, m = socket.gethostname().split(".")[0], d / "munge"
    shutil.copy("/etc/munge/munge.key", m / "munge.key"); os.chmod(m / "munge.key", 0o600)
    subprocess.run(["munged", "--force", f"--socket={m / 'socket'}", f"--key-file={m / 'munge.key'}",
                    f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'seed'}"],
                   check=True)
    (d / "slurm.conf").write_text(f"""ClusterName=lasrtest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={m / 'socket'}
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
NodeName={host} CPUs={os.cpu_count()} RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = {**os.environ, "SLURM_CONF": str(d / "slurm.conf")}
    subprocess.run(["slurmctld"], env=env, check=True)
    subprocess.run(["slurmd"], env=env, check=True)
    for _ in range(120):
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
        if r.stdout.strip() == "idle": return env
        time.sleep(0.5)
    raise RuntimeError(f"the test cluster did not come up: {r.stdout} {r.stderr} {(d / 'slurmctld.log').read_text()[-2000:]}")


def _stop_cluster(d: Path):
    for pid in (d / "slurmd.pid", d / "slurmctld.pid", d / "munge" / "munged.pid"):
        if pid.is_file():
            try: os.kill(int(pid.read_text()), 15)
            except (ProcessLookupError, ValueError): pass


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    "A one-node SLURM cluster for this module: the environment whose SLURM_CONF reaches it."
    if os.geteuid() != 0: pytest.skip("a test SLURM cluster needs root (to run munged, slurmctld, slurmd)")
    missing = [c for c in DAEMONS if shutil.which(c) is None]
    assert not missing, f"{missing} not found: `make test` installs Debian's slurm-wlm and munge (apt-get, as root)"
    d = tmp_path_factory.mktemp("slurm")
    try: yield _start_cluster(d)
    finally: _stop_cluster(d)


def _on_slurm(env, out, *args, timeout=900):
    return lasr("reproduce", "--preset", "smoke", "--out", out, "--launcher", "slurm", "--slurm-gpus", "0",
                "--slurm-cpus", "1", "--poll", "1", *args, env=env, timeout=timeout, cwd=ROOT)


def _queue(env) -> dict:
    r = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], env=env, capture_output=True, text=True, check=True)
    return dict(l.split() for l in r.stdout.splitlines() if l.strip())


def _tables(d: Path) -> dict:
    return {f.name: f.read_bytes() for f in sorted(d.iterdir()) if f.suffix in (".md", ".csv")}


def _same_tables(mine: dict, theirs: dict, n: int):
    "`mine` (n tables of a study, .md and .csv) equal `theirs` of the same names: byte for byte but for training times."
    assert len(mine) == n and set(mine) <= set(theirs), (sorted(mine), sorted(theirs))
    for name, b in mine.items():
        if name.endswith(".md"): assert b == theirs[name], name
        else: assert METRICS_ONLY.sub("", b.decode()) == METRICS_ONLY.sub("", theirs[name].decode()), name


def test_a_cancelled_run_is_reported_then_resubmitted_alone(slurm, tmp_path):
    out = tmp_path / "reports"
    r = _on_slurm(slurm, out, "--only", "table1", "--no-wait")
    assert r.returncode == 0, r.stderr[-3000:]
    submitted = re.findall(r"submitted run (\w+) as job (\S+)", r.stdout)
    assert len(submitted) == 2 and "run the same command again" in r.stdout, r.stdout
    victim, job = submitted[1]
    for _ in range(600):   # mid-run: its task is running and papermill has started its notebook
        if _queue(slurm).get(job) == "RUNNING" and (out / "smoke" / "runs" / victim / "run.ipynb").is_file(): break
        time.sleep(0.2)
    else: pytest.fail(f"job {job} never ran: {_queue(slurm)}")
    subprocess.run(["scancel", job], env=slurm, check=True)
    for _ in range(900):   # the other run finishes
        if not _queue(slurm): break
        time.sleep(0.5)
    log = json.loads((out / "smoke" / "runs" / victim / "slurm.json").read_text())["log"]
    r = _on_slurm(slurm, out, "--only", "table1", "--no-wait")
    assert r.returncode == 2 and "1 runs failed" in r.stderr and victim in r.stderr and log in r.stderr, r.stderr
    assert not (out / "smoke" / "table1.md").exists()   # no tables while a run is missing
    r = _on_slurm(slurm, out, "--only", "table1")   # the one after: only the cancelled run again, which resumes
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    again = re.findall(r"submitted run (\w+) as job (\S+)", r.stdout)
    assert [rid for rid, _ in again] == [victim] and again[0][1] != job
    assert (out / "smoke" / "table1.md").is_file() and (out / "smoke" / "runs" / victim / "result.json").is_file()


@pytest.fixture(scope="module")
def slurm_study(slurm, tmp_path_factory):
    "The smoke study's Table 2 (stage 1, then two rows that start from it), every run a SLURM task."
    out = tmp_path_factory.mktemp("on-slurm") / "reports"
    r = _on_slurm(slurm, out, "--only", "table2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r


def test_every_run_is_a_slurm_task_and_the_tables_are_the_local_ones(slurm, slurm_study, installed_study):
    out, r = slurm_study
    runs = sorted((out / "smoke" / "runs").iterdir())
    assert len(runs) == 3 and all((d / "result.json").is_file() for d in runs)
    jobs = {d.name: json.loads((d / "slurm.json").read_text()) for d in runs}
    for rid, rec in jobs.items():   # each run was a task of a job array, with its log
        assert re.fullmatch(r"\d+(_\d+)?", rec["job"]) and Path(rec["log"]).is_file(), rec   # a lone task is a plain job
        assert f"{rid} (job {rec['job']})" in r.stdout   # one line per finished run: run, job, state, time
    assert len({j["job"].split("_")[0] for j in jobs.values()}) == 2   # two arrays: the rows wait for stage 1
    assert "after " in r.stdout and "done run" in r.stdout
    sacct = subprocess.run(["sacct"], env=slurm, capture_output=True, text=True)
    assert "accounting storage is disabled" in (sacct.stdout + sacct.stderr)   # states came from squeue and files
    for nb in [*runs, out / "smoke"]:   # no machine path and no srun hint in an executed notebook
        for f in Path(nb).glob("*.ipynb"):
            text = f.read_text()
            assert "The `srun` command" not in text and str(out) not in text, f
    # the same tables as the smoke study run one run at a time by the installed package, byte for byte but for the
    # CSVs' training times
    _same_tables(_tables(out / "smoke"), _tables(installed_study.work / "reports" / "smoke"), 3)


def test_two_local_jobs_give_the_tables_of_one(installed_study, tmp_path):
    "Table 1 with two runs at once (`--jobs 2`) is the installed package's Table 1 of one run at a time."
    two = lasr("reproduce", "--preset", "smoke", "--only", "table1", "--out", tmp_path / "two", "--jobs", "2",
               cwd=ROOT, timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    assert len(re.findall(r"ran run \w+ in", two.stderr)) == 2   # the runs were the launcher's
    assert "Kernel is running over TCP" not in two.stderr        # the study's kernels talk over IPC
    _same_tables(_tables(tmp_path / "two" / "smoke"), _tables(installed_study.work / "reports" / "smoke"), 2)
