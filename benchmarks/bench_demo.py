"""Time the main job, `fwlab demo`, from nothing to its reports, and record it.

    .venv/bin/python benchmarks/bench_demo.py [--out results/bench-demo] [--json benchmarks/records/demo-DATE.json]

It runs the demo as `make demo` does (the shared FineWeb-Edu sample when it sits beside the checkout,
offline), in a fresh --out folder so nothing is resumed, and writes the wall-clock time, what the
demo expected, the sizing it chose (OUT/demo.json), the final losses and this CPU's features (bf16
and compile decisions depend on them) as a small JSON. The README's demo duration cites that file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fwlab.records import code_record
from fwlab.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "fineweb-edu-sample"


def cpu_record() -> dict:
    flags, model = set(), platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return dict(cpu=model, cores=os.cpu_count(),
                features=sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench-demo", help="the demo's folder (emptied first)")
    ap.add_argument("--json", default=f"benchmarks/records/demo-{time.strftime('%Y-%m-%d')}.json",
                    help="where to write the record")
    a = ap.parse_args()
    out = (ROOT / a.out).resolve()
    if out.exists():
        if not (out / "demo.json").is_file():
            sys.exit(f"{out}: exists and is not a demo folder; choose another --out")
        shutil.rmtree(out)
    sources = [str(p) for p in (SAMPLE / "fineweb_edu.jsonl.gz", SAMPLE / "fineweb.jsonl.gz")
               if p.is_file()]
    cmd = [str(Path(sys.executable).parent / "fwlab"), "demo", "--out", str(out)]
    if sources:
        cmd += ["--source", *sources]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    tc = ROOT.parent / "shared" / "tiktoken_cache"
    if tc.is_dir():
        env.setdefault("TIKTOKEN_CACHE_DIR", str(tc))
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.time() - t0
    sys.stdout.write(proc.stdout)
    plan = json.loads((out / "demo.json").read_text()) if (out / "demo.json").is_file() else {}
    finals = {}
    for f in sorted((out / "sweep" / "runs").glob("*/final.json")):
        d = json.loads(f.read_text())
        finals[f.parent.name] = d.get("final_val_loss", d.get("val_loss"))
    record = dict(benchmark="demo", command=" ".join(cmd), exit_code=proc.returncode,
                  wall_s=round(wall, 1), wall_min=round(wall / 60, 2),
                  expected_s=(plan.get("expected_s") or {}).get("total"),
                  max_tokens=plan.get("max_tokens"), asked_tokens=plan.get("asked_tokens"),
                  sized=plan.get("sized"), speed=plan.get("speed"), final_val_loss=finals,
                  real_scale_report=(out / "reference-124m" / "sweep" / "report" /
                                     "report.html").is_file(),
                  machine=cpu_record(), python=platform.python_version(), code=code_record(),
                  when=time.strftime("%Y-%m-%dT%H:%M:%S"))
    atomic_write_json(ROOT / a.json, record)
    print(f"demo: exit {proc.returncode}, {wall / 60:.1f} min; record {a.json}")
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
