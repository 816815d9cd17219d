"""Throughput of `fwlab prepare` against a single-process tokenising loop, in one invocation.

The shared FineWeb-Edu + FineWeb sample (396 documents, ~266k tokens) is repeated --repeat times
into a temporary .jsonl.gz (each copy of a document gets a short suffix, so all documents are
distinct and the val split behaves as on real data): ~27M tokens at the default 100.
Baseline: read the same file and call encode_ordinary per document in this process.
Prints tokens/s of both, the ratio (target on 2 cores: >= 1.7x) and peak RSS (target < 1.5 GB):
getrusage of this process and of its reaped children (the pool workers), plus the peak summed RSS
of the process tree sampled from /proc every 0.1 s. Also prints the CPU seconds of both: on a
machine shared with other work the wall-clock ratio measures the sharing as much as the code.

    .venv/bin/python benchmarks/bench_prepare.py [--repeat 100] [--workers N]
"""
import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))

import tiktoken  # noqa: E402

from fwlab.prepare import prepare  # noqa: E402

SAMPLES = [SHARED / "data" / "fineweb-edu-sample" / n for n in ("fineweb_edu.jsonl.gz", "fineweb.jsonl.gz")]


def tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of `pid` and all its descendants, from /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        children = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        return 0.0
    return kb / 1024 + sum(tree_rss_mb(c) for c in children)


def cpu_with_children() -> float:
    """CPU seconds of this process plus its reaped children (the pool workers, forked from it)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class PeakTreeRSS(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            time.sleep(0.1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--val-tokens", type=int, default=100_000)
    args = ap.parse_args()

    texts = []
    for path in SAMPLES:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f if line.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "repeated.jsonl.gz"
        with gzip.open(src, "wt", encoding="utf-8", compresslevel=1) as f:
            for rep in range(args.repeat):
                for t in texts:
                    f.write(json.dumps({"text": f"{t}\n[{rep}]"}) + "\n")
        print(f"input: {args.repeat} x {len(texts)} documents, {src.stat().st_size / 1e6:.0f} MB gzip, "
              f"{os.cpu_count()} CPUs, workers={args.workers or 'all'}", flush=True)

        enc = tiktoken.get_encoding("gpt2")
        t0, c0 = time.perf_counter(), time.process_time()
        n_base = 0
        with gzip.open(src, "rb") as f:
            for line in f:
                n_base += len(enc.encode_ordinary(json.loads(line)["text"])) + 1
        base_s, base_cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"single-process encode_ordinary loop: {n_base:,} tokens in {base_s:.1f} s = "
              f"{n_base / base_s / 1e6:.2f} M tok/s", flush=True)

        sampler = PeakTreeRSS()
        sampler.start()
        t0, c0 = time.perf_counter(), cpu_with_children()
        m = prepare(str(src), Path(tmp) / "out", val_tokens=args.val_tokens, workers=args.workers, progress=False)
        prep_s, prep_cpu = time.perf_counter() - t0, cpu_with_children() - c0
        sampler.stop.set()
        sampler.join()
        assert m["tokens"] == n_base, (m["tokens"], n_base)
        print(f"fwlab prepare (shards written): {m['tokens']:,} tokens in {prep_s:.1f} s = "
              f"{m['tokens'] / prep_s / 1e6:.2f} M tok/s", flush=True)

    ratio = (m["tokens"] / prep_s) / (n_base / base_s)
    ncpu = len(os.sched_getaffinity(0))
    print(f"CPU time: single-process loop {base_cpu:.1f} s, prepare {prep_cpu:.1f} s (main + workers; "
          f"{prep_cpu / base_cpu:.2f}x the loop's work). On {ncpu} idle cores that bounds the ratio at "
          f"{ncpu * base_cpu / prep_cpu:.2f}x; the wall-clock ratio below is lower when other processes "
          f"share the cores (load average now {os.getloadavg()[0]:.1f})")
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"ratio prepare / single-process: {ratio:.2f}x (target >= 1.7x on 2 cores)")
    print(f"peak RSS: this process {self_mb:.0f} MB, largest worker {child_mb:.0f} MB, "
          f"whole process tree at once {sampler.peak:.0f} MB (target < 1500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
