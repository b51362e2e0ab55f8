"""`terramask data build` on the shared LoveDA and Potsdam samples, with the scripted chat
server as generator and two judges: samples per second, what each rule removed, peak
memory; the same build without MLLMs (interactive only) is the peer measured in the same run.
Then the output is read back by `eval unigeoseg-bench`'s loader and `train clicks`' reader.

    .venv/bin/python benchmarks/data_engine.py [OUT]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.chat_server import ChatServer
from tests.helpers.data_script import DataScript
from tests.helpers.paths import rs_samples_folder

SETS = {
    "loveda": ["0=no-data", "1=background", "2=building", "3=road", "4=water", "5=barren",
               "6=forest", "7=agriculture"],
    "potsdam": ["0=ignore", "1=impervious surface", "2=building", "3=low vegetation", "4=tree",
                "5=car", "6=clutter"],
}  # fmt: skip


def build(name: str, out: Path, mllm: list[str]) -> tuple[dict, float, int]:
    root = rs_samples_folder() / name
    command = [sys.executable, "-m", "terramask.cli", "data", "build", str(root / "img_dir"),
               str(root / "ann_dir"), "-o", str(out), "--split", "test", "--json",
               "--reasoning-share", "1.0", "--overwrite", *mllm]  # fmt: skip
    for spec in SETS[name]:
        command += ["-c", spec]
    # The command runs under a wrapper that reports VmHWM, its own peak after exec: a forked
    # child's ru_maxrss would also count the pages of this process (which holds the scripted
    # server's requests) from before the exec.
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        wrapper = [sys.executable, "-c", _PEAK_WRAPPER, peak.name, *command[3:]]
        started = time.perf_counter()
        run = subprocess.run(wrapper, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        peak_kb = int(Path(peak.name).read_text() or 0)
    if run.returncode != 0:
        sys.exit(f"data build failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout), seconds, peak_kb


_PEAK_WRAPPER = """
import atexit, re, runpy, sys
out = sys.argv[1]
def peak():
    status = open('/proc/self/status').read()
    open(out, 'w').write(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))
atexit.register(peak)
sys.argv = ['terramask', *sys.argv[2:]]
runpy.run_module('terramask.cli', run_name='__main__', alter_sys=True)
"""


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tm-data-"))
    script = DataScript()
    with ChatServer(script) as gen, ChatServer(script) as judge1, ChatServer(script) as judge2:
        mllm = ["--mllm-url", gen.url, "--mllm-model", "scripted-gen", "--no-mllm-cache",
                "--judge-url", judge1.url, "--judge-model", "scripted-judge-1",
                "--judge-url", judge2.url, "--judge-model", "scripted-judge-2"]  # fmt: skip
        for name in SETS:
            peer, peer_s, peer_kb = build(name, out / f"{name}-interactive", [])
            stats, seconds, peak_kb = build(name, out / name, mllm)
            tasks = {t: i["samples"] for t, i in stats["tasks"].items()}
            print(f"{name}: {stats['images']} images, {stats['patches']['total']} patches, "
                  f"{stats['instances']['candidates']} candidates, "
                  f"{stats['instances']['kept']} kept; samples {tasks}")
            print(f"  rules removed: {stats['rules']}")
            print(f"  {stats['samples']} samples in {stats['seconds']} s = "
                  f"{stats['samples_per_second']} samples/s (engine), {seconds:.1f} s wall; "
                  f"MLLM calls {stats['mllm']['calls']}; peak RSS {peak_kb / 1024:.0f} MiB")
            print(f"  peer, interactive only (no MLLM): {peer['samples']} samples in "
                  f"{peer['seconds']} s = {peer['samples_per_second']} samples/s, peak RSS "
                  f"{peer_kb / 1024:.0f} MiB; MLLM build / peer wall time = "
                  f"{seconds / peer_s:.2f}")
    print(f"requests by kind: {dict(script.counts)}; data in {out}")
    # read back only now: the loaders' imports would swell the builds' forked processes
    from terramask.eval.referring_datasets import load_referring_dataset
    from terramask.train.data import load_training_data

    for name in SETS:
        data = load_referring_dataset("unigeoseg-bench", out / name, split="test")
        groups: dict[str, int] = {}
        for sample in data.samples:
            groups[sample.group] = groups.get(sample.group, 0) + 1
        training = load_training_data(out / name, split="test")
        print(f"{name} read back: unigeoseg-bench loader {groups}; train clicks reader "
              f"{training.describe()['samples']} samples ({training.layout})")


if __name__ == "__main__":
    main()
