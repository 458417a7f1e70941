"Committed notebooks and reports carry no machine paths: they must read the same on every machine."
import json, re, subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE = re.compile(r"(?<![\w.~-])/(tmp|home|root)/")
BASE64 = re.compile(r"base64,[A-Za-z0-9+/=\s\\]+")   # embedded images and audio: letters, not paths
BINARY = {".png", ".jpg", ".jpeg", ".gif", ".wav", ".flac", ".ogg", ".safetensors", ".ckpt", ".h5", ".pt"}

def _committed(*dirs) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *dirs], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / n for n in out.splitlines() if (ROOT / n).is_file()]

def _text(p: Path) -> str:
    "What a reader of `p` sees: a notebook's sources, text outputs and metadata, without image data."
    if p.suffix != ".ipynb": return p.read_text(errors="replace")
    nb = json.loads(p.read_text())
    parts = [json.dumps(nb.get("metadata", {}))]
    for c in nb["cells"]:
        parts.append("".join(c.get("source", [])))
        for o in c.get("outputs", []):
            parts.append("".join(o.get("text", [])) + "".join(o.get("traceback", [])))
            for mime, v in o.get("data", {}).items():
                if not mime.startswith("image/"): parts.append(v if isinstance(v, str) else "".join(v) if isinstance(v, list) else json.dumps(v))
    return "\n".join(parts)

def machine_paths(text: str) -> list[str]:
    "The machine paths in `text`, each with a little context."
    text = BASE64.sub("base64,", text)
    return [text[max(m.start() - 40, 0):m.end() + 40] for m in MACHINE.finditer(text)]

def test_machine_paths_are_found():
    assert machine_paths("error: /tmp/tmpab12/missing.csv not found")
    assert machine_paths('"out": "/home/ana/lasr/reports"') and machine_paths("at /root/.cache/x")
    assert not machine_paths('<audio src="data:audio/wav;base64,UklGRg/tmp/Kjw/home/AAA=">')
    assert not machine_paths("reports/work/corpus and ../work/corpus and lasr/study/run.ipynb")

def test_no_machine_paths_in_committed_notebooks_and_reports():
    files = [p for p in _committed("nbs", "reports") if p.suffix.lower() not in BINARY]
    assert any(p.suffix == ".ipynb" for p in files) and any(p.parts[-3:-1] == ("reports", "demo") for p in files)
    bad = {str(p.relative_to(ROOT)): hits[:3] for p in files if (hits := machine_paths(_text(p)))}
    assert not bad, f"machine paths in committed files (clear the output or print paths relative): {bad}"

def test_no_stray_numbers_from_write_text():
    "A cell ending in a bare `path.write_text(...)` shows a character count (`1349`): a bug in nbs/, stray in reports."
    for p in _committed("nbs", "reports"):
        if p.suffix != ".ipynb": continue
        for c in json.loads(p.read_text())["cells"]:
            src = "".join(c.get("source", [])).rstrip().splitlines()
            last = src[-1] if src and c["cell_type"] == "code" else ""
            bare = re.search(r"\.write_(text|bytes)\(", last) and not last[:1].isspace() \
                   and not re.match(r"^[\w.,\s\[\]]+=(?!=)", last) and not last.endswith(";")
            shown = p.parts[len(ROOT.parts)] == "nbs" or any(o.get("output_type") == "execute_result" for o in c.get("outputs", []))
            assert not (bare and shown), f"{p.relative_to(ROOT)}: a cell ends with a bare write_text/write_bytes: {last}"
