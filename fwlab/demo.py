"""The main job, `fwlab demo`: prepare data, a CPU-scale replica of the reference sweep, the report.

The replica: the `tiny` GPT as a wsd sweep (one constant-LR trunk and a cooldown branch per budget)
at the reference scenario's epoch ratios 0.85 / 1.42 / 2.13 / 2.85 of the prepared training set.
On CPU the 50,304-wide head is most of the step, so the batch shrinks, not the model: iterations
of 4 x 128 tokens. On ~235k train tokens that is budgets of ~390-1310 iterations (1,720 computed).

It is sized to this machine: before anything else it times a few real training steps and
evaluations of that model (measure_speed), predicts the whole job's duration from them
(expected_seconds), and when that exceeds the target (8 minutes, under the 10 promised: the
measurement is noisy on a shared machine) it prepares fewer tokens, so every budget shrinks
alike and the epoch ratios stay (size_demo). What it decided is kept in OUT/demo.json, so running
the demo again resumes the same sweep instead of re-sizing it.

The learning rate is the tiny model's, not GPT-2's: measured on this sweep, at 6e-4 the model is
so LR-limited that cooldown branches end *above* the constant-LR trunk (7.34 at 2.85 epochs); at
3e-3 with 512-token iterations it reaches 7.01 and each cooldown buys ~0.05-0.07 nats over the
trunk at the same tokens, as WSD does at scale. 16k val tokens per eval keep the stderr near 0.05;
evaluating every 32 iterations of the full-size sweep gives the forecast backtest about ten points
in the first 30% of the longest budget (a smaller sweep: see eval_settings).

At real scale too: when a folder of published curves is there (../shared/data/reference-curves
beside the checkout, or --reference DIR), the demo also imports one real 124M sweep from it
(REAL_GROUP: Schaipp et al. 2025's WSD sweep on SlimPajama, its trunk and the budget runs of
15k/25k/35k/50k steps) into OUT/reference-124m/sweep and writes its report beside the CPU sweep's
(~1 s to import, ~10 s for the report: REAL_S); the CPU part is unchanged. Both reports overlay
the published default selection (llm.c 124M on FineWeb, the FineWeb-Edu 124M run).

The data is what --source gives, read in that order. `make demo` offline passes the shared
sample's FineWeb-Edu file first and its plain FineWeb file after it (the sample holds only ~101k
FineWeb-Edu tokens); the demo prints how many documents and tokens it took from each, labelled,
and says when the sources held fewer tokens than asked.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

from fwlab.errors import FwlabError
from fwlab.sweep import epochs_to_budgets, plan_sweep, planned_total, run_sweep, summary_lines
from fwlab.utils import asset, atomic_write_json, parse_count, parse_number, read_json, resolve_path

DEMO_EPOCHS = (0.85, 1.42, 2.13, 2.85)
DEMO_VAL_TOKENS = 30_000
DEMO_CONFIG = dict(preset="tiny", tokens_per_iter=4 * 128, micro_batch=4, lr=3e-3, eval_interval=32,
                   eval_tokens=16_384, ckpt_interval=500, keep_ckpts=1)
DEMO_MODE, DEMO_COOLDOWN = "wsd", 0.2
TARGET_MIN = 8.0                 # what the sizing aims at; the promise is 10 minutes
FULL_TRUNK_ITERS = 1310          # the full-size sweep's longest budget, evaluated every 32 iterations
MIN_TRAIN_TOKENS = 24_000        # below this the smallest budget has < 40 iterations: no curve left
# Fixed work, in seconds on an idle 2-core EPYC with avx512_bf16, whose tiny 4x128 step runs at
# REF_TOK_S (eager, bf16): per papermill run (kernel start, imports, data, model, checkpoints, the
# last eval), torch.compile of a run that compiles, and the report (the analysis notebook with its
# bootstrap forecast). A slower machine is slower at these by the same factor.
REF_TOK_S = 2500.0
RUN_OVERHEAD_S, COMPILE_S, REPORT_S, PREPARE_S = 8.0, 15.0, 45.0, 3.0
REAL_GROUP = "schaipp2025-124m-lr0.001"   # the real 124M sweep the demo imports and reports
REAL_DIR = "reference-124m"              # ... into OUT/REAL_DIR/sweep
# its import and report, seconds: a kernel start and reading ~1 MB, not training, so not scaled by
# the machine's training speed (measured 7.5 s inside a demo and 13 s alone, at load 6 on 2 cores)
REAL_S = 12.0


# --- measuring and sizing --------------------------------------------------------------------
def measure_speed(steps: int = 8, device: str = "auto") -> dict:
    """Tokens/s of the demo's training step and of its evaluation forward pass on this machine:
    the tiny model, 4 x 128 tokens, the dtype training would pick, eager (the median of `steps`
    after 2 warm-up steps, on random tokens: speed does not depend on them)."""
    import torch

    from fwlab import hardware
    from fwlab.config import TrainConfig
    from fwlab.model import GPT
    from fwlab.train import evaluate, train_step

    cfg = TrainConfig(**DEMO_CONFIG)
    mc = cfg.model_config()
    dev = hardware.resolve_device(device)
    dtype = hardware.resolve_dtype("auto", dev)
    ctx = hardware.autocast(dev, dtype)
    g = torch.Generator().manual_seed(0)
    model = GPT(mc).to(dev)
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), dev.type)
    micro = cfg.micro_batch

    class Random:  # train_step's loader interface
        def next_batch(self, n):
            x = torch.randint(0, mc.vocab_size, (n, mc.block_size + 1), generator=g)
            return x[:, :-1].contiguous(), x[:, 1:].contiguous()

    batch = [Random().next_batch(micro)]
    accum = cfg.tokens_per_iter // (micro * mc.block_size)

    def timed(f, n):
        out = []
        for i in range(n + 2):
            t = time.perf_counter()
            f()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                out.append(time.perf_counter() - t)
        return statistics.median(out)

    train_s = timed(lambda: train_step(model, opt, Random(), micro, accum, dev, ctx, cfg.grad_clip), steps)
    eval_s = timed(lambda: evaluate(model, batch, dev, ctx), steps)
    return {"train_tok_s": cfg.tokens_per_iter / train_s,
            "eval_tok_s": micro * mc.block_size / eval_s, "device": dev.type, "dtype": dtype}


def eval_settings(trunk_iters: int) -> tuple[int, int]:
    """(eval_interval, eval_tokens) for a sweep whose trunk has `trunk_iters` iterations.

    The full-size sweep evaluates 16k tokens every 32 iterations (~40 points on its trunk; as many
    tokens evaluated as trained, a quarter of the time). A smaller sweep evaluates more often, so
    its curves keep enough points (at least ~17 on the trunk), on fewer tokens (down to 4k, s.e.
    ~0.09; every run evaluates the same windows, so differences between runs are surer than that),
    so that evaluation never costs much more than its training."""
    full, tpi = DEMO_CONFIG["eval_interval"], DEMO_CONFIG["tokens_per_iter"]
    every = max(8, min(full, round(full * trunk_iters / FULL_TRUNK_ITERS)))
    tokens = min(DEMO_CONFIG["eval_tokens"], max(4096, every * tpi))
    return every, tokens


def sweep_shape(train_tokens: int) -> dict:
    """The sweep the demo runs on `train_tokens` training tokens: budgets, iterations computed,
    evaluations, eval_interval."""
    budgets = epochs_to_budgets(DEMO_EPOCHS, train_tokens, DEMO_CONFIG["tokens_per_iter"])
    specs = plan_sweep(DEMO_MODE, budgets, cooldown_frac=DEMO_COOLDOWN)
    every, eval_tokens = eval_settings(budgets[-1])
    # every eval_interval iterations of each run, its last iteration, and iteration 0 of the trunk
    evals = sum(s["planned_iters"] // every + 1 for s in specs) + 1
    return dict(budgets=budgets, iters=planned_total(specs), evals=evals, eval_interval=every,
                eval_tokens=eval_tokens, runs=len(specs),
                trunk_tokens=budgets[-1] * DEMO_CONFIG["tokens_per_iter"])


def expected_seconds(train_tokens: int, speed: dict) -> dict:
    """The demo's predicted duration on `train_tokens` training tokens at `speed` (measure_speed):
    {'total', 'train', 'eval', 'fixed', 'compile'} in seconds."""
    from fwlab import hardware
    shape = sweep_shape(train_tokens)
    tpi = DEMO_CONFIG["tokens_per_iter"]
    train = shape["iters"] * tpi / speed["train_tok_s"]
    eval_tokens = min(shape["eval_tokens"], DEMO_VAL_TOKENS)
    evals = shape["evals"] * eval_tokens / speed["eval_tok_s"]
    slow = max(1.0, REF_TOK_S / speed["train_tok_s"]) if speed.get("device", "cpu") == "cpu" else 1.0
    compiles = speed.get("device", "cpu") == "cpu" and hardware.resolve_compile(
        None, hardware.resolve_device("cpu"), shape["trunk_tokens"], speed.get("dtype"))
    compile_s = COMPILE_S * slow if compiles else 0.0
    fixed = (PREPARE_S + shape["runs"] * RUN_OVERHEAD_S + REPORT_S) * slow
    return dict(total=train + evals + fixed + compile_s, train=train, eval=evals, fixed=fixed,
                compile=compile_s)


def size_demo(speed: dict, asked_tokens: int, target_s: float, val_tokens: int = DEMO_VAL_TOKENS) -> dict:
    """How many tokens to prepare so that the demo takes at most `target_s` at `speed`: all
    `asked_tokens` when they fit, else the most that fit (whole thousands of train tokens), never
    fewer than MIN_TRAIN_TOKENS. Returns max_tokens (to prepare: val + train), train_tokens,
    expected (expected_seconds), sized (whether it cut anything), fits."""
    want = asked_tokens - val_tokens
    if want <= 0:
        raise FwlabError(f"--max-tokens {asked_tokens:,}: the demo holds out {val_tokens:,} tokens "
                         f"for validation and needs more to train on; ask for at least "
                         f"{val_tokens + MIN_TRAIN_TOKENS:,}")
    floor = min(MIN_TRAIN_TOKENS, want)
    train = want
    if target_s and expected_seconds(train, speed)["total"] > target_s:
        lo, hi = floor, want  # the duration grows with the tokens: bisect
        while hi - lo > 1000:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if expected_seconds(mid, speed)["total"] <= target_s else (lo, mid)
        train = max(floor, lo // 1000 * 1000)
    exp = expected_seconds(train, speed)
    return dict(max_tokens=val_tokens + train, train_tokens=train, expected=exp,
                sized=train < want, fits=not target_s or exp["total"] <= target_s)


# --- what the data is ----------------------------------------------------------------------
def dataset_label(source: str) -> str:
    """What a source is, from its file name (or hub dataset name): FineWeb-Edu, plain FineWeb, or
    '' when unknown."""
    s = (source if source.startswith("hf:") else Path(source).name).lower().replace("_", "-")
    if "fineweb-edu" in s:
        return "FineWeb-Edu"
    if "fineweb" in s:
        return "plain FineWeb, not FineWeb-Edu"
    return ""


def data_composition(sources, manifest: dict) -> list[dict]:
    """Documents and tokens prepare took from each local source (in reading order, counted as
    prepare counts them: an end-of-text token + the document's tokens, the last one truncated at
    max_tokens); hub sources are not re-read, only labelled."""
    from fwlab import prepare as P
    rows, docs_left, tokens_left = [], manifest["docs"], manifest["tokens"]
    enc = None
    for src in sources:
        row = dict(source=src, label=dataset_label(src), docs=None, tokens=None, docs_in_source=None)
        if not src.startswith("hf:"):
            if enc is None:
                import tiktoken
                enc = tiktoken.get_encoding(P.TOKENIZER)
            docs = tokens = total = 0
            for text in P.iter_documents(src):
                total += 1
                if docs_left > 0:
                    n = min(1 + len(enc.encode_ordinary(text)), tokens_left)
                    docs, tokens, docs_left, tokens_left = docs + 1, tokens + n, docs_left - 1, tokens_left - n
            row.update(docs=docs, tokens=tokens, docs_in_source=total)
        rows.append(row)
    return rows


def describe_data(rows: list[dict], manifest: dict, asked: int, sized_to: int | None) -> list[str]:
    """Lines saying what the demo trains on, how much of each source, and what fell short."""
    total = manifest["tokens"]
    lines = [f"data: {total:,} tokens ({manifest['docs']:,} documents): "
             f"{manifest['train']['tokens']:,} to train on, {manifest['val']['tokens']:,} held out "
             f"for validation (the documents with the lowest text hashes)"]
    for r in rows:
        what = f" [{r['label']}]" if r["label"] else " [not FineWeb by its name]"
        if r["tokens"] is None:
            lines.append(f"  {r['source']}{what}")
        else:
            part = "all" if r["docs"] == r["docs_in_source"] else f"{r['docs']:,} of"
            lines.append(f"  {r['tokens']:>9,} tokens, {part} {r['docs_in_source']:,} documents, of "
                         f"{r['source']}{what}")
    labels = {r["label"] for r in rows if r["docs"] != 0}
    if len(labels) > 1:
        lines.append("  note: a mix of sources of different kinds; its losses are not those of "
                     "FineWeb-Edu alone")
    goal = sized_to if sized_to is not None else asked
    if total < goal and not manifest.get("last_doc_truncated"):
        lines.append(f"  note: the sources hold only {total:,} tokens, fewer than the {goal:,} "
                     f"asked for; the demo uses them all")
    return lines


# --- the demo ------------------------------------------------------------------------------------
def _newer_than(path: Path, others) -> bool:
    """`path` exists and was written after every one of `others` (which must exist)."""
    try:
        t = path.stat().st_mtime_ns
        return all(t >= p.stat().st_mtime_ns for p in others)
    except FileNotFoundError:
        return False


def _clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t))


def _plan(out: Path, source, asked: int, target_min: float) -> dict:
    """OUT/demo.json: the sizing decided the first time (reused when resuming), else a fresh one."""
    path = out / "demo.json"
    if path.is_file():
        plan = read_json(path)
        if plan.get("asked_tokens") == asked and plan.get("source") == source:
            print(f"demo: resuming the demo sized on {plan.get('created', '?')} "
                  f"({plan['max_tokens']:,} tokens; {path})")
            return dict(plan, resumed=True)
        raise FwlabError(f"{path}: this demo was started with --source {plan.get('source')} and "
                         f"--max-tokens {plan.get('asked_tokens')}; re-run with those, or choose "
                         f"another --out")
    if (out / "data" / "manifest.json").is_file() or (out / "sweep" / "sweep.json").is_file():
        # a demo directory from before demo.json existed: keep its data as it was asked for
        return dict(source=source, asked_tokens=asked, max_tokens=asked, sized=False, speed=None,
                    expected_s=None, created=None, resumed=True)
    print("demo: timing the tiny model's training step on this machine ...", flush=True)
    speed = measure_speed()
    size = size_demo(speed, asked, target_min * 60, DEMO_VAL_TOKENS)
    plan = dict(source=source, asked_tokens=asked, max_tokens=size["max_tokens"],
                train_tokens=size["train_tokens"], sized=size["sized"], fits=size["fits"],
                speed=speed, expected_s=size["expected"], target_min=target_min,
                created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, plan)
    return plan


def main(args) -> int:
    """`fwlab demo`: prepare data, the CPU-scale replica of the reference sweep, then the report."""
    from fwlab import prepare as P, report  # here: papermill and nbconvert cost seconds to import
    from fwlab.importers import default_reference_dir
    from fwlab.runs import load_runs
    t0 = time.time()
    out = resolve_path(args.out)
    given = getattr(args, "reference", None)
    ref_root = default_reference_dir(resolve_path(given) if given else None)  # a wrong one: now
    source, hf_config = P.default_source(args.source)
    sources = [source] if isinstance(source, str) else list(source)
    asked = parse_count(args.max_tokens, "--max-tokens")
    # nan or inf would size the sweep from nonsense after a minute of timing: refuse them first
    target = parse_number(getattr(args, "target_min", TARGET_MIN) or 0, "--target-min")
    if target < 0:
        raise FwlabError(f"--target-min {target:g}: must be >= 0 minutes (0 = every token asked)")
    plan = _plan(out, sources, asked, target)
    if plan.get("speed") and not plan.get("resumed"):
        sp, exp = plan["speed"], plan["expected_s"]
        print(f"demo: this machine trains the tiny model at {sp['train_tok_s']:,.0f} tokens/s and "
              f"evaluates at {sp['eval_tok_s']:,.0f} tokens/s ({sp['device']}, {sp['dtype']})")
        if plan["sized"]:
            print(f"demo: sized to fit {plan['target_min']:g} min: {plan['max_tokens']:,} tokens of the "
                  f"{asked:,} asked (every budget shrinks alike; the epoch ratios stay)")
        print(f"demo: expected duration {exp['total'] / 60:.1f} min (training {exp['train'] / 60:.1f}, "
              f"evaluation {exp['eval'] / 60:.1f}, the rest {(exp['fixed'] + exp['compile']) / 60:.1f}); "
              f"ETA {_clock(t0 + exp['total'] + (REAL_S if ref_root else 0))}"
              + ("" if plan.get("fits", True) else
                 f" - more than {plan['target_min']:g} min even at the smallest size")
              + (f"; then ~{REAL_S:.0f} s for the real 124M sweep's report"
                 if ref_root else ""))
    print(f"demo 1/3: preparing {' '.join(sources)} into {out / 'data'}")
    manifest = P.prepare(source, str(out / "data"), hf_config=hf_config, max_tokens=plan["max_tokens"],
                         val_tokens=DEMO_VAL_TOKENS)
    for line in describe_data(data_composition(sources, manifest), manifest, asked,
                              plan["max_tokens"] if plan.get("sized") else None):
        print(line)

    shape = sweep_shape(int(manifest["train"]["tokens"]))
    config = dict(DEMO_CONFIG, eval_interval=shape["eval_interval"], eval_tokens=shape["eval_tokens"])
    print(f"demo 2/3: wsd sweep, tiny model, budgets at {', '.join(map(str, DEMO_EPOCHS))} epochs "
          f"= {', '.join(f'{b:,}' for b in shape['budgets'])} iterations of "
          f"{DEMO_CONFIG['tokens_per_iter']} tokens ({shape['iters']:,} computed), {shape['eval_tokens']:,} "
          f"val tokens evaluated every {shape['eval_interval']} -> {out / 'sweep'}")
    state = run_sweep(out / "sweep", out / "data", mode=DEMO_MODE, epochs=list(DEMO_EPOCHS),
                      config=config)
    print("\n".join(summary_lines(state)))
    if state["status"] != "completed":
        print(f"demo: some runs did not finish; see {out / 'sweep' / 'sweep.json'}")
        return 1
    sweep_dir = out / "sweep"
    report_dir = sweep_dir / "report"
    finals = [sweep_dir / "runs" / r["name"] / "final.json" for r in state["runs"]]
    if _newer_than(report_dir / "summary.csv", finals) and (report_dir / "report.html").is_file():
        print(f"demo 3/3: the report is up to date: {report_dir}")
    else:
        print(f"demo 3/3: report for {sweep_dir} (ETA {_clock(time.time() + REPORT_S * _slow(plan))})")
        # the widely shared 40M table, when the checkout ships it: its verdicts show in the report
        claims = asset("examples", "claims_40m_fineweb_edu.yaml")
        report_dir = Path(report.make_report(str(sweep_dir),
                                               claims=str(claims) if claims.is_file() else None,
                                               reference=str(ref_root) if ref_root else None))
    print_answer(sweep_dir, report_dir)
    if ref_root is not None:
        real_dir = real_sweep(out, ref_root)
        print_answer(real_dir, real_dir / "report")
        print(f"reports: the CPU sweep's {report_dir / 'report.html'}; the real 124M sweep's "
              f"{real_dir / 'report' / 'report.html'}")
    took = (time.time() - t0) / 60
    exp = None if plan.get("resumed") else plan.get("expected_s")
    print(f"demo finished in {took:.1f} min" + (f" (expected {exp['total'] / 60:.1f})" if exp else ""))
    return 0


def _slow(plan: dict) -> float:
    sp = plan.get("speed") or {}
    return max(1.0, REF_TOK_S / sp["train_tok_s"]) if sp.get("device") == "cpu" else 1.0


def print_answer(sweep_dir: Path, report_dir: Path) -> None:
    """A sweep's one-sentence answer and decision table, and where its report is."""
    import pandas as pd

    from fwlab import report
    from fwlab.runs import load_runs
    table = report.decision_table(load_runs(sweep_dir))
    print(report.answer(table).replace("**", ""))
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(report.display_table(table).to_string(index=False))
    print(f"report: {report_dir / 'report.html'} (figures: {report_dir / 'curves.png'}, table: "
          f"{report_dir / 'summary.csv'})")


def real_sweep(out: Path, ref_root: Path) -> Path:
    """The real 124M sweep (REAL_GROUP of the published curves in `ref_root`) imported into
    OUT/REAL_DIR/sweep and reported there; both kept when already done. Returns the sweep dir."""
    from fwlab import report
    from fwlab.importers import import_reference_group
    sweep_dir = out / REAL_DIR / "sweep"
    if not (sweep_dir / "sweep.json").is_file():
        print(f"demo, at real scale: importing the published 124M sweep {REAL_GROUP} (Schaipp et "
              f"al. 2025, WSD on SlimPajama) from {ref_root} -> {sweep_dir}")
        import_reference_group(ref_root, REAL_GROUP, sweep_dir, budgets_only=True, progress=False)
    rep = sweep_dir / "report"
    if (rep / "report.html").is_file() and _newer_than(rep / "summary.csv", [sweep_dir / "sweep.json"]):
        print(f"demo, at real scale: the report is up to date: {rep}")
    else:
        print(f"demo, at real scale: report for {sweep_dir}")
        report.make_report(str(sweep_dir), reference=str(ref_root))
    return sweep_dir
