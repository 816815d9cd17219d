"""The `fwlab` command: argument parsing only; each subcommand calls one fwlab module.

Errors a user can fix (FwlabError) print as one line, without a traceback, and exit 2. Relative
paths in any argument are from the repository root (fwlab.utils.resolve_path), so they mean the
same in every command and notebook. The modules of train, eval, sample, export, sweep and report
are imported when their subcommand runs: they import torch (~1 s) or papermill and nbconvert
(2-4 s), which `fwlab --help` and the other commands need not wait for.

Exit status: 0 done; 2 an error a user can fix (FwlabError, and a file the command could not read
or write), printed as one line without a traceback; 3 `fwlab train` ran but the run diverged; 1
`fwlab sweep` had a run that failed or was skipped, and any unexpected error (a traceback); 130
interrupted.
"""
from __future__ import annotations

import argparse
import sys
import textwrap

from fwlab import __version__, claims, plan
from fwlab import prepare as P
from fwlab.config import DEVICES, DTYPES, add_train_args, config_from_args
from fwlab.errors import FwlabError
from fwlab.utils import resolve_path

DESCRIPTION = """\
fwlab answers "how many iterations should I train a small GPT (~40M parameters) on N tokens of
FineWeb-Edu, what validation loss will it reach, and how many hours will it take?" by measuring:
it prepares token shards, trains runs (or a sweep of iteration budgets, sharing one trunk in wsd
mode), and turns their loss curves into a report, a forecast, a plan for this machine or a named
GPU, and verdicts on published claims.

typical session:
  fwlab prepare --out data/edu --max-tokens 3.68e9      FineWeb-Edu into token shards
  fwlab sweep --data data/edu --out results/sw --preset 40m --budgets 6000,10000,15000,20000 --mode wsd
  fwlab report results/sw                               curves, decision table, claims
  fwlab plan --from results/sw --gpu "RTX 4070"         hours and loss per budget
  fwlab demo                                            all of it at CPU scale, in minutes

Relative paths are from the repository root (outside one, from the current directory). Errors a
user can fix print one line and exit with status 2. `fwlab COMMAND --help` describes each command."""


class _Help(argparse.HelpFormatter):
    """Every option's default after its help, unless the help gives it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or action.default == []):
            return text
        return text + " (default: %(default)s)"


class _TopHelp(argparse.RawDescriptionHelpFormatter, _Help):
    """fwlab --help: the description's lines as written."""


# argument names that hold paths (fwlab prepare resolves its --source itself: hf:ORG/NAME, globs)
PATH_ARGS = ("out", "data", "run", "sweep", "sources", "claims", "csv", "from_", "init_from",
             "hellaswag_data")


# --- fwlab prepare -------------------------------------------------------------------------------
def _add_prepare(sub):
    p = sub.add_parser(
        "prepare", help="tokenise FineWeb(-Edu) or local files into token shards",
        description="Tokenise documents (GPT-2 BPE) into uint16 token shards plus a manifest in "
                    "OUT: a validation split chosen by text hash (the same documents whatever "
                    "the order), then training shards. Re-running resumes; a DIR prepared from "
                    "another source is refused unless --overwrite.")
    p.add_argument("--source", nargs="+", default=None,
                   help="hf:ORG/NAME (default hf:HuggingFaceFW/fineweb-edu) or local "
                        ".jsonl/.jsonl.gz/.json/.parquet/.txt paths or globs")
    p.add_argument("--out", required=True, help="output data directory")
    p.add_argument("--hf-config", default=None, help="hub dataset config (default sample-10BT)")
    p.add_argument("--max-tokens", default=None, help="stop after this many tokens (e.g. 3.68e9)")
    p.add_argument("--val-tokens", default="10e6", help="validation tokens (default 10e6)")
    p.add_argument("--shard-tokens", default="100e6", help="tokens per shard (default 100e6)")
    p.add_argument("--workers", type=int, default=None,
                   help="tokeniser processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace a DIR prepared from another source")
    p.set_defaults(func=_run_prepare)


def _run_prepare(a):
    source, hf_config = P.default_source(a.source, a.hf_config)
    # the counts stay text: prepare() parses them, naming the setting when one is bad
    m = P.prepare(source, a.out, hf_config=hf_config, max_tokens=a.max_tokens,
                  val_tokens=a.val_tokens, shard_tokens=a.shard_tokens, workers=a.workers,
                  overwrite=a.overwrite)
    print(f"{a.out}: {m['train']['tokens']:,} train tokens, {m['val']['tokens']:,} val tokens")


# --- fwlab train ---------------------------------------------------------------------------------
def _add_train(sub):
    p = sub.add_parser(
        "train", help="train one run (resumes a run directory that has checkpoints)",
        description="Train one run into --out: config.json (every setting, resolved), "
                    "metrics.jsonl (train and val loss, from iteration 0), final.json and "
                    "checkpoints. The same command resumes an interrupted run exactly; a finished "
                    "one is left alone. Exit status 0 done, 2 a mistake the message names, 3 the "
                    "run diverged, 130 interrupted.",
        epilog="example: fwlab train --data data/edu --out results/run1 --preset 40m "
               "--max-iters 6000  (several GPUs: torchrun --nproc_per_node=N -m fwlab.train ...)")
    add_train_args(p, required=("data", "out"))
    p.set_defaults(func=_run_train)


def _run_train(a):
    from fwlab.train import exit_status, train
    final = train(config_from_args(a))
    v = final["final_val_loss"]  # None when the run diverged
    print(f"{final['status']}: final val loss {'n/a' if v is None else f'{v:.4f}'}")
    return exit_status(final)  # 3 when the run diverged, so scripts can tell


# --- fwlab sweep / report --------------------------------------------------------------------
def _add_sweep(sub):
    p = sub.add_parser(
        "sweep", help="train a set of iteration budgets (papermill runs)",
        description="Train every budget as an execution of notebooks/02_train.ipynb into "
                    "OUT/runs/bN/, recorded in OUT/sweep.json. Re-running the same command "
                    "skips finished runs and resumes interrupted ones. Exit status 1 when any "
                    "run failed (the others still run).",
        epilog="example: fwlab sweep --data data/fineweb-edu --out results/sweep --preset 40m "
               "--epochs 0.85,1.42,2.13,2.85 --mode wsd")
    budgets = p.add_mutually_exclusive_group(required=True)
    budgets.add_argument("--budgets", help="iteration budgets, e.g. 6000,10000,15000,20000")
    budgets.add_argument("--epochs", help="epoch targets of the prepared training set, converted "
                                          "to iteration budgets, e.g. 0.85,1.42,2.13,2.85")
    p.add_argument("--mode", choices=("independent", "wsd"), default="independent",
                   help="independent: one full run per budget (cosine unless --schedule); wsd: "
                        "one trunk + a cooldown branch per budget from its checkpoint")
    add_train_args(p, skip=("max_iters", "init_from", "init_iter"), required=("data", "out"),
                   helps={"out": "sweep directory: OUT/sweep.json, and OUT/runs/NAME/ per run",
                          "progress": "draw the sweep's progress bar (the runs never draw theirs)"})
    p.set_defaults(func=_run_sweep)


def _run_sweep(a):
    from fwlab import sweep
    return sweep.main_from_args(a)


def _add_report(sub):
    p = sub.add_parser(
        "report", help="execute the analysis notebook for a sweep (or runs) into SWEEP/report/",
        description="Execute notebooks/03_analysis.ipynb on a sweep directory into SWEEP/report/ "
                    "(analysis.ipynb, report.html, curves.png, summary.csv); or on several sweeps "
                    "or run directories trained separately, plotted together, into --out DIR.",
        epilog="example: fwlab report results/runs/40m-6000 results/runs/40m-10000 --out "
               "results/runs/report")
    p.add_argument("sources", nargs="+", metavar="DIR",
                   help="a sweep directory, or run directories (and sweeps) to plot together")
    p.add_argument("--out", default=None,
                   help="report directory (default: SWEEP/report for a single sweep; required "
                        "otherwise)")
    p.add_argument("--claims", default=None, help="claims YAML whose verdicts the report shows")
    p.add_argument("--reference", nargs="+", default=None, metavar="NAME_OR_DIR",
                   help="published curves to overlay: names of runs in the reference-curves "
                        "folder, curve folders (curve.csv + run.json), or the folder itself for "
                        "its default selection (default: llm.c 124M on FineWeb and the "
                        "FineWeb-Edu 124M run, when ../shared/data/reference-curves is found)")
    p.add_argument("--no-reference", action="store_true", help="overlay no published curves")
    p.set_defaults(func=_run_report)


def _run_report(a):
    from fwlab import report
    ref = None if a.no_reference else (a.reference or "auto")
    out = report.make_report(a.sources, claims=a.claims, out=a.out, reference=ref)
    print(f"report: {out}")


# --- fwlab plan / check-claims -------------------------------------------------------------------
def _add_plan(sub):
    p = sub.add_parser(
        "plan", help="hours and predicted loss per budget on this machine",
        description="For each iteration budget: epochs of the data, hours on this machine "
                    "(measured with a few timed steps) or on --gpu, and the predicted final val "
                    "loss (fitted to --from runs, else an indicative prior), with a "
                    "recommendation.")
    p.add_argument("--preset", default=None,
                   help="model preset (default: the --from runs', else 40m)")
    p.add_argument("--data-tokens", default=None,
                   help="unique training tokens, e.g. 3.68e9 (default: the --from runs' data)")
    p.add_argument("--tokens-per-iter", default=None,
                   help="tokens per iteration (default: the --from runs', else 524288)")
    p.add_argument("--budgets", default=None,
                   help="comma-separated iteration budgets to plan, e.g. 6000,10000 (default: the "
                        "--from sweep's own budgets, else 6000,10000,15000,20000)")
    p.add_argument("--from", dest="from_", nargs="*", default=[],
                   help="runs or sweeps whose curves the forecast is fitted to (default: none, the "
                        "indicative prior)")
    p.add_argument("--measure-iters", type=int, default=10,
                   help="micro-steps timed to measure this machine's tokens/s (default 10)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--out", default=None, help="also write the plan JSON here (for check-claims)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="device to measure on (auto: cuda, else mps, else cpu)")
    p.add_argument("--dtype", default="auto", choices=DTYPES,
                   help="dtype to measure in (auto: as training would pick)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile while measuring (default: as training would decide)")
    p.add_argument("--micro-batch", type=int, default=0,
                   help="sequences per forward pass while measuring; 0 = as training would pick")
    p.add_argument("--data", default=None, help="measure on this prepared data dir (default: "
                                                "random tokens)")
    p.add_argument("--tok-per-s", type=float, default=None, help="skip measuring: use this speed")
    p.add_argument("--gpu", default=None, help="hours on this GPU (e.g. 'RTX 4070') from its peak "
                                               "FLOPs x --mfu instead of measuring here")
    p.add_argument("--mfu", default="0.3,0.5", help="assumed MFU range for --gpu (default 0.3,0.5)")
    p.add_argument("--min-gain-per-hour", type=float, default=0.01,
                   help="recommend the largest budget whose extra hour buys more than this many "
                        "nats of val loss (default 0.01)")
    p.set_defaults(func=_run_plan)


def _run_plan(a):
    return plan.main_plan(a)


def _add_check_claims(sub):
    p = sub.add_parser(
        "check-claims", help="verdicts on a recommendation table",
        description="Check each line of a claims YAML (e.g. examples/claims_40m_fineweb_edu.yaml: "
                    "val loss and hours per budget) against measured runs, a forecast from their "
                    "curves, or the prior, with each verdict's basis.")
    p.add_argument("claims", help="claims YAML")
    p.add_argument("--from", dest="from_", required=True,
                   help="a sweep or run directory, or a plan JSON (fwlab plan --out)")
    p.add_argument("--mfu", default="0.3,0.5",
                   help="assumed MFU range for hours on a named GPU (default 0.3,0.5)")
    p.add_argument("--csv", default=None, help="also write the verdicts to this CSV file")
    p.set_defaults(func=_run_check_claims)


def _run_check_claims(a):
    return claims.main(a)


# --- fwlab eval / sample / export --------------------------------------------------------------
def _add_eval(sub):
    p = sub.add_parser("eval", help="benchmarks of a trained run",
                       description="Benchmarks of a trained run's checkpoint, written into the "
                                   "run directory (RUN/eval_NAME.json), which the report reads.")
    esub = p.add_subparsers(dest="benchmark", required=True, help="the benchmark to run")
    h = esub.add_parser("hellaswag", help="HellaSwag validation accuracy (acc, acc_norm)",
                        description="Completion-style HellaSwag accuracy (acc, and acc_norm "
                                    "normalised by length) into RUN/eval_hellaswag.json.")
    h.add_argument("--run", required=True, help="the run directory to evaluate")
    h.add_argument("--ckpt", type=int, default=None, help="checkpoint iteration (default: newest)")
    h.add_argument("--data", default=None, help="local hellaswag jsonl(.gz); default: the hub")
    h.add_argument("--limit", type=int, default=None, help="first N examples only (default: all 10,042)")
    h.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:N or mps (auto: cuda, else mps, else cpu)")
    h.add_argument("--batch-size", type=int, default=None,
                   help="examples per forward pass, 4 rows each (default: 32 on CUDA, 4 on CPU)")
    h.set_defaults(func=_run_eval_hellaswag)


def _run_eval_hellaswag(a):
    from fwlab import evaluate
    return evaluate.main_hellaswag(a)


def _add_sample(sub):
    p = sub.add_parser("sample", help="sample text from a trained run",
                       description="Generate text from a run's checkpoint, continuing --prompt.")
    p.add_argument("--run", required=True, help="the run directory to sample from")
    p.add_argument("--ckpt", type=int, default=None,
                   help="checkpoint iteration (default: the newest)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty, from the "
                                                "end-of-text token)")
    p.add_argument("--tokens", type=int, default=100, help="new tokens per sample")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="softmax temperature; 0 = greedy")
    p.add_argument("--top-k", type=int, default=200,
                   help="sample among the k most likely tokens; 0 = no cut-off")
    p.add_argument("--seed", type=int, default=1337, help="random seed, for repeatable samples")
    p.add_argument("--num-samples", type=int, default=1, help="samples to draw")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:N or mps (auto: cuda, else mps, else cpu)")
    p.set_defaults(func=_run_sample)


def _run_sample(a):
    from fwlab import evaluate
    return evaluate.main_sample(a)


def _add_export(sub):
    p = sub.add_parser(
        "export", help="export a run to a Hugging Face transformers GPT-2 checkpoint",
        description="Write a run's checkpoint as a transformers GPT-2 model (config.json, "
                    "model.safetensors, tokenizer files) that GPT2LMHeadModel.from_pretrained "
                    "loads; checked by comparing logits after export. Needs the export extra: "
                    "pip install 'fwlab[export]'.")
    p.add_argument("--run", required=True, help="the run directory to export")
    p.add_argument("--ckpt", type=int, default=None,
                   help="checkpoint iteration (default: the newest)")
    p.add_argument("--out", required=True, help="directory to write the model into")
    p.add_argument("--format", choices=("hf",), default="hf",
                   help="hf: Hugging Face transformers GPT-2")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier export in --out (never a run, a sweep, a data folder "
                        "or a file export did not write)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading the export back with transformers to compare logits")
    p.set_defaults(func=_run_export)


def _run_export(a):
    from fwlab import export
    return export.main_export(a)


# --- fwlab demo ----------------------------------------------------------------------------------
def _add_demo(sub):
    p = sub.add_parser(
        "demo", help="the main job: prepare data, a CPU-scale budget sweep, the report",
        description="Prepare a few hundred thousand FineWeb-Edu tokens into OUT/data, run a "
                    "CPU-scale replica of the reference scenario (tiny model, wsd sweep of "
                    "0.85/1.42/2.13/2.85 epochs) into OUT/sweep, then the report into "
                    "OUT/sweep/report. Running it again resumes, or does nothing when done.")
    p.add_argument("--source", nargs="+", default=None,
                   help="local .jsonl(.gz)/.parquet/.txt files instead of the hub "
                        "(default: hf:HuggingFaceFW/fineweb-edu, sample-10BT)")
    p.add_argument("--out", default="results/demo", help="output directory (default results/demo)")
    p.add_argument("--max-tokens", default="300e3",
                   help="tokens to prepare at most (default 300e3); fewer when the machine is too "
                        "slow to train on them within --target-min")
    p.add_argument("--target-min", type=float, default=8.0,
                   help="size the sweep to end in about this many minutes on this machine, from "
                        "a few timed training steps (default 8; 0 = use every token asked)")
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="the folder of published curves: the demo also imports its real 124M "
                        "WSD sweep and reports it beside the CPU sweep (default: "
                        "../shared/data/reference-curves when it exists)")
    p.set_defaults(func=_run_demo)


def _run_demo(a):
    from fwlab import demo
    return demo.main(a)


# --- fwlab import --------------------------------------------------------------------------------
def _add_import(sub):
    from dataclasses import fields

    from fwlab.config import TrainConfig, add_train_args
    from fwlab.importers import FORMATS, IMPORT_FLAGS
    p = sub.add_parser(
        "import", help="turn another trainer's log or a published curve into a run (or sweep) "
                       "directory",
        description="Read a training log (a path or an http(s) URL) into an ordinary run "
                    "directory (config.json, metrics.jsonl, final.json) that report, plan --from "
                    "and check-claims --from read like a run fwlab trained. The learning-rate "
                    "schedule comes from --lr-schedule, else the schedule flags, else the log's "
                    "own learning rates. What the log does not state stays unknown (null).",
        epilog="examples: fwlab import llmc main.log --out runs/llmc --tokens-per-iter 524288; "
               "fwlab import reference ../shared/data/reference-curves --group "
               "schaipp2025-124m-lr0.001 --out results/schaipp")
    p.add_argument("format", choices=FORMATS, help="the source's format: " + ", ".join(FORMATS))
    p.add_argument("src", help="the log file or URL; for reference: a curve folder (curve.csv + "
                               "run.json), or the reference-curves folder with --group")
    p.add_argument("--out", required=True, help="run directory to write (a sweep with --group)")
    p.add_argument("--group", default=None, help="reference format: assemble this group's runs "
                                                 "into a sweep directory")
    p.add_argument("--budgets-only", action="store_true",
                   help="with --group: only the trunk and the budget runs (per horizon the WSD "
                        "run whose cooldown is closest to --cooldown-frac, default 0.2)")
    p.add_argument("--params", default=None, help="model parameters (unknown when not given)")
    p.add_argument("--dataset", default=None, help="the training data (unknown when not given)")
    p.add_argument("--val-set", default=None, help="what the val loss was measured on")
    p.add_argument("--train-tokens", default=None,
                   help="unique training tokens, for epochs (unknown when not given)")
    p.add_argument("--lr-schedule", default=None,
                   help="the schedule as a fwlab.schedule spec: JSON text or a .json file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--tokens-per-iter", default=None,
                   help="tokens per iteration (unknown when not given, unless the source states it)")
    p.add_argument("--max-iters", default=None,
                   help="planned iterations (default: what the source states, else unknown)")
    # the schedule flags of `fwlab train`; a flag left out takes fwlab train's default
    add_train_args(p, skip=tuple(f.name for f in fields(TrainConfig)
                                 if f.name not in IMPORT_FLAGS or f.name in ("tokens_per_iter",
                                                                              "max_iters")))
    p.set_defaults(func=_run_import)


def _run_import(a):
    import json
    from pathlib import Path

    from fwlab import importers
    from fwlab.utils import parse_count
    spec = None
    if not str(a.src).startswith(("http://", "https://")):  # a local log: the one path rule
        a.src = str(resolve_path(a.src))
    if a.lr_schedule:
        path = resolve_path(a.lr_schedule)  # a JSON file, or the JSON itself
        text = path.read_text() if path.is_file() else a.lr_schedule
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise FwlabError(f"--lr-schedule: not JSON (line {e.lineno}: {e.msg})") from None
    count = (lambda v, n: None if v is None else parse_count(v, n))
    a.tokens_per_iter = count(a.tokens_per_iter, "--tokens-per-iter")
    a.max_iters = count(a.max_iters, "--max-iters")
    flags = {k: getattr(a, k) for k in importers.IMPORT_FLAGS if getattr(a, k, None) is not None}
    res = importers.import_source(
        a.format, a.src, a.out, group=a.group, flags=flags, lr_schedule=spec,
        params=count(a.params, "--params"), dataset=a.dataset, val_set=a.val_set,
        train_tokens=count(a.train_tokens, "--train-tokens"), overwrite=a.overwrite,
        cooldown_frac=flags.get("cooldown_frac", 0.2),
        cooldown_shape=flags.get("cooldown_shape", "linear"), budgets_only=a.budgets_only)
    if a.group:
        print(f"sweep: {Path(a.out) / 'sweep.json'} ({len(res['runs'])} runs, budgets "
              f"{', '.join(f'{b:,}' for b in res['budgets'])})")
    else:
        v = res.get("final_val_loss")
        print(f"run: {a.out} ({res['status']}, {res['iters']:,} steps, final val loss "
              f"{'n/a' if v is None else v})")


# the docstring's paragraph, shown by `fwlab --help` (README.md says the same)
EXIT_STATUS = "exit status: " + " ".join(__doc__.split("Exit status: ")[1].split()).replace("`", "")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fwlab", description=DESCRIPTION,
                                     formatter_class=_TopHelp, epilog=textwrap.fill(EXIT_STATUS, 96))
    parser.add_argument("--version", action="version", version=f"fwlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these (fwlab COMMAND --help for its options):")
    for add in (_add_prepare, _add_train, _add_sweep, _add_report, _add_plan, _add_check_claims,
                _add_eval, _add_sample, _add_export, _add_demo, _add_import):
        add(sub)
    for p in subparsers(parser).values():
        p.formatter_class = _Help
    return parser


def subparsers(parser: argparse.ArgumentParser, prefix: str = "fwlab") -> dict:
    """{'fwlab train': its parser, 'fwlab eval hellaswag': ..., ...}: every subcommand's parser."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, p in action.choices.items():
                out[f"{prefix} {name}"] = p
                out.update(subparsers(p, f"{prefix} {name}"))
    return out


def _resolve_paths(args) -> None:
    """Every path argument by the one rule (utils.resolve_path), so errors name the absolute path."""
    for name in PATH_ARGS:
        v = getattr(args, name, None)
        if isinstance(v, list):
            setattr(args, name, [str(resolve_path(x)) for x in v])
        elif isinstance(v, str) and v:
            setattr(args, name, str(resolve_path(v)))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _resolve_paths(args)
        rc = args.func(args)
    except FwlabError as e:
        print(f"fwlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the command could not read or write: name it, no traceback
        from fwlab.errors import os_problem
        print(f"fwlab {args.command}: error: {e.filename or ''}{': ' if e.filename else ''}"
              f"{os_problem(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fwlab {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
