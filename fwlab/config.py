"""Configs: model presets and the one flat training config, with validation and CLI flags.

`TrainConfig` is the single source of every training setting. Its fields become the flags of
`fwlab train`, `python -m fwlab.train`, `fwlab sweep` and the parameters of notebooks/02_train.ipynb
(a field `max_iters` is the flag `--max-iters`), and the resolved config is written to
RUN/config.json, which everything downstream reads.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import numbers
import typing
from dataclasses import dataclass, fields

from fwlab.errors import FwlabError
from fwlab.loggers import parse_log_to
from fwlab.utils import parse_count, read_json, resolve_path

# Model presets. `40m` is the reference scenario's model (~41M parameters with tied embeddings);
# `124m` is GPT-2 small for comparison with published figures; `mini`/`tiny` are CPU-scale.
PRESETS: dict[str, dict] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=64, block_size=128),
    "mini": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "40m": dict(n_layer=12, n_head=6, n_embd=384, block_size=1024),
    "124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}

SCHEDULES = ("cosine", "wsd", "constant")
COOLDOWN_SHAPES = ("linear", "1-sqrt")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16")
# the default evaluation cadence (TrainConfig.eval_every): about this many points per run, and at
# most this many iterations apart
EVAL_POINTS, EVAL_INTERVAL_MAX = 24, 250


@dataclass
class TrainConfig:
    # where
    data: str = ""                      # prepared data directory (fwlab prepare)
    out: str = ""                       # run directory
    verify: bool = False                # re-check every shard's sha256 (else once per shard file)
    # model
    preset: str = "40m"
    n_layer: int | None = None          # any preset field can be overridden
    n_head: int | None = None
    n_embd: int | None = None
    block_size: int | None = None
    dropout: float = 0.0
    # budget and batch
    max_iters: int = 6000
    tokens_per_iter: int = 524_288      # the reference scenario: 512 x 1024 tokens per iteration
    micro_batch: int = 0                # sequences per forward pass per rank; 0 = pick for the device
    # optimisation
    lr: float = 6e-4
    min_lr_frac: float = 0.1            # cosine floor, and where a WSD cooldown ends (x lr)
    warmup_iters: int | None = None     # None = derived from max_iters (see schedule.default_warmup)
    schedule: str = "cosine"
    cooldown_frac: float = 0.2
    cooldown_shape: str = "linear"
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    # evaluation, checkpoints, stopping
    eval_interval: int | None = None    # None = max_iters/24 within [1, 250] (eval_every); and at 0
    eval_tokens: int = 1_048_576        # capped by the validation split (the run says so)
    log_interval: int = 10              # a loss line every N iterations in headless runs; 0 = never
    log_to: str = ""                    # also log to: comma-separated tensorboard, wandb (fwlab.loggers)
    ckpt_interval: int = 1000
    keep_ckpts: int = 2
    ckpt_at: str = ""                   # comma-separated iterations whose checkpoints are kept (branches)
    early_stop_patience: int = 0        # evals without improvement before stopping; 0 = never
    early_stop_delta: float = 0.0       # the improvement that counts
    # periodic extras during training (0 = off)
    hellaswag_every: int = 0
    hellaswag_limit: int = 500
    hellaswag_data: str = ""
    sample_every: int = 0
    # hardware
    device: str = "auto"
    dtype: str = "auto"
    compile: bool | None = None         # None = on for CUDA, off elsewhere
    # branching (a WSD cooldown branch starts from another run's checkpoint)
    init_from: str = ""
    init_iter: int | None = None
    progress: bool = True

    def model_config(self) -> GPTConfig:
        if self.preset not in PRESETS:
            raise FwlabError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        m = dict(PRESETS[self.preset])
        for k in ("n_layer", "n_head", "n_embd", "block_size"):
            v = getattr(self, k)
            if v is not None:
                m[k] = v
        from fwlab.model import GPTConfig  # here: importing torch costs ~1 s a command
        return GPTConfig(**m, dropout=self.dropout)

    def eval_every(self) -> int:
        """Iterations between evaluations: eval_interval, or when None max_iters/24 within
        [1, 250], so that a short run still draws a curve (~24 points, plus iteration 0) and a
        6,000-iteration or longer one is evaluated every 250 iterations."""
        if self.eval_interval is not None:
            return self.eval_interval
        return max(1, min(EVAL_INTERVAL_MAX, self.max_iters // EVAL_POINTS))

    def ckpt_at_iters(self) -> list[int]:
        return parse_int_list(self.ckpt_at, "ckpt_at") if self.ckpt_at else []

    def validate(self) -> "TrainConfig":
        """Raise FwlabError naming the first bad value; return self for chaining."""
        def bad(name, why):
            raise FwlabError(f"{name}={getattr(self, name)!r}: {why}")

        self._check_types()
        if self.preset not in PRESETS:
            bad("preset", f"unknown preset; choose one of {', '.join(PRESETS)}")
        for name in ("max_iters", "tokens_per_iter", "eval_interval", "eval_tokens", "ckpt_interval",
                     "keep_ckpts"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                bad(name, "must be a positive integer")
        for name in ("micro_batch", "early_stop_patience", "hellaswag_every", "hellaswag_limit",
                     "sample_every", "seed", "log_interval"):  # numpy refuses a negative seed
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                bad(name, "must be a positive integer")
        mc = self.model_config()
        if mc.n_embd % mc.n_head:
            raise FwlabError(f"n_embd={mc.n_embd} is not divisible by n_head={mc.n_head}")
        if self.tokens_per_iter % mc.block_size:
            bad("tokens_per_iter", f"must be a multiple of block_size={mc.block_size}")
        # every float setting is finite (the type check above); now each one's range
        if not self.lr > 0:
            bad("lr", "must be > 0")
        if not self.grad_clip > 0:
            bad("grad_clip", "must be > 0 (the largest gradient norm kept)")
        if not self.weight_decay >= 0:
            bad("weight_decay", "must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, "must be in [0, 1)")
        if not self.early_stop_delta >= 0:
            bad("early_stop_delta", "must be >= 0")
        if not 0 <= self.min_lr_frac <= 1:
            bad("min_lr_frac", "must be in [0, 1]")
        if self.warmup_iters is not None and not 0 <= self.warmup_iters < self.max_iters:
            bad("warmup_iters", f"must be in [0, max_iters={self.max_iters})")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"choose one of {', '.join(SCHEDULES)}")
        if not 0 < self.cooldown_frac <= 1:
            bad("cooldown_frac", "must be in (0, 1]")
        if self.cooldown_shape not in COOLDOWN_SHAPES:
            bad("cooldown_shape", f"choose one of {', '.join(COOLDOWN_SHAPES)}")
        if not 0 <= self.dropout < 1:
            bad("dropout", "must be in [0, 1)")
        if self.device not in DEVICES:
            bad("device", f"choose one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            bad("dtype", f"choose one of {', '.join(DTYPES)}")
        if bool(self.init_from) != (self.init_iter is not None):
            raise FwlabError("--init-from RUN and --init-iter K go together: give both or neither")
        if self.init_iter is not None and not 0 <= self.init_iter < self.max_iters:
            bad("init_iter", f"must be in [0, max_iters={self.max_iters})")
        self.ckpt_at_iters()
        parse_log_to(self.log_to)
        if not self.data:
            raise FwlabError("no data directory given: pass --data DIR (made by `fwlab prepare`)")
        if not self.out:
            raise FwlabError("no run directory given: pass --out RUN")
        return self

    def _check_types(self) -> None:
        """Every field of its declared type: whole numbers for int fields (not bools), finite
        numbers for float fields, text for str fields; FwlabError naming the field otherwise.
        Values can come from config.json, a sweep or a notebook, not only from typed flags."""
        hints = typing.get_type_hints(TrainConfig)
        for f in fields(self):
            tp, optional = _base_type(hints[f.name])
            v = getattr(self, f.name)
            if v is None and optional:
                continue
            if tp is bool:
                ok = isinstance(v, bool)
            elif tp is int:
                ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
            elif tp is float:
                ok = (isinstance(v, numbers.Real) and not isinstance(v, bool)
                      and math.isfinite(v))
            else:
                ok = isinstance(v, tp)
            if not ok:
                want = {bool: "True or False", int: "a whole number", float: "a finite number",
                        str: "text"}.get(tp, tp.__name__)
                raise FwlabError(f"{f.name}={v!r}: must be {want}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, strict: bool = True) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown and strict:
            raise FwlabError(f"unknown training setting(s): {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**{k: v for k, v in d.items() if k in known})


def parse_int_list(s: str, name: str = "value") -> list[int]:
    """'6000,10000' -> [6000, 10000]; each item a whole number >= 0 as utils.parse_count reads it
    (1e4 and 10_000 too); FwlabError naming `name` and the item otherwise."""
    return [parse_count(part.strip(), name) for part in str(s).split(",") if part.strip()]


def _base_type(tp):
    """int | None -> (int, True); bool -> (bool, False)."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return tp, False


# --help of every TrainConfig flag: what it does and its choices; add_train_args appends the
# default (argparse %-formats help text: a literal percent sign is %%)
FIELD_HELP = {
    "data": "prepared data directory (made by `fwlab prepare`)",
    "out": "run directory to write; one holding checkpoints is resumed, a finished one left alone",
    "verify": "re-check every shard's sha256 and token ids (else once per shard file)",
    "preset": "model size: " + ", ".join(f"{k} ({v['n_layer']} layers x {v['n_embd']})"
                                         for k, v in PRESETS.items()),
    "n_layer": "transformer layers (overrides the preset's)",
    "n_head": "attention heads (overrides the preset's; must divide n_embd)",
    "n_embd": "embedding width (overrides the preset's)",
    "block_size": "context length in tokens (overrides the preset's)",
    "dropout": "dropout probability, in [0, 1)",
    "max_iters": "the iteration budget: optimizer steps to train (1e4 and 10_000 are read too)",
    "tokens_per_iter": "tokens per optimizer step, a multiple of block_size (reached by gradient "
                       "accumulation over micro-batches and ranks)",
    "micro_batch": "sequences per forward pass per rank (must divide the sequences per rank and "
                   "iteration; the maths do not depend on it); 0 = the largest that fits the device",
    "lr": "peak learning rate",
    "min_lr_frac": "the cosine schedule's floor, and where a wsd cooldown ends, as a fraction of lr",
    "warmup_iters": "linear warmup iterations; unset = 5%% of max_iters, at most 1000",
    "schedule": f"learning-rate schedule: {', '.join(SCHEDULES)} (wsd: warmup, stable, then a "
                "cooldown over the last cooldown_frac of the run)",
    "cooldown_frac": "wsd: the fraction of max_iters spent cooling down, in (0, 1]",
    "cooldown_shape": f"wsd: the cooldown's shape: {', '.join(COOLDOWN_SHAPES)}",
    "weight_decay": "AdamW weight decay of the 2-D weights (not biases and norm gains)",
    "beta1": "AdamW beta1, in [0, 1)",
    "beta2": "AdamW beta2, in [0, 1)",
    "grad_clip": "clip the gradient norm to this",
    "seed": "seed of the initial weights and the data order",
    "eval_interval": f"iterations between validation evaluations (and one at iteration 0); unset "
                     f"= max_iters/{EVAL_POINTS}, between 1 and {EVAL_INTERVAL_MAX}",
    "eval_tokens": "validation tokens per evaluation (the same windows every time; capped by the "
                   "val split, with a warning)",
    "log_interval": "print iteration, loss, ms/iter, tok/s and MFU every N iterations when no "
                    "progress bar is shown on a terminal; 0 = never",
    "log_to": "also log metrics.jsonl's metrics to: tensorboard, wandb (comma-separated; wandb "
              "offline unless WANDB_MODE says otherwise; each needs its extra, e.g. pip install "
              "'fwlab[tensorboard]')",
    "ckpt_interval": "iterations between checkpoints (and one at the end)",
    "keep_ckpts": "regular checkpoints kept (the newest ones)",
    "ckpt_at": "comma-separated iterations whose checkpoints are kept for good (branch points)",
    "early_stop_patience": "stop after this many evaluations without improvement; 0 = never",
    "early_stop_delta": "the val-loss improvement that counts for early stopping",
    "hellaswag_every": "HellaSwag accuracy every N iterations during training; 0 = off",
    "hellaswag_limit": "HellaSwag examples per periodic evaluation",
    "hellaswag_data": "local HellaSwag jsonl(.gz) for the periodic evaluation (unset: the hub)",
    "sample_every": "log a text sample every N iterations; 0 = off",
    "device": "where to train (auto: cuda, else mps, else cpu)",
    "dtype": "compute dtype (auto: bfloat16 autocast where the device has "
             "native bf16, i.e. CUDA or a CPU with avx512_bf16, else float32)",
    "compile": "torch.compile the model; unset = on for CUDA, on a CPU only for a run long enough "
               "to earn the compile time back, never on MPS",
    "init_from": "branch: start from this run's checkpoint (weights, optimizer, data position, "
                 "RNG), with --init-iter",
    "init_iter": "branch: the iteration of --init-from's checkpoint to start from",
    "progress": "draw a progress bar",
}


# the flags whose values are a fixed set, shown as {a,b} in --help (TrainConfig.validate checks them)
_CHOICES = {"preset": tuple(PRESETS), "schedule": SCHEDULES, "cooldown_shape": COOLDOWN_SHAPES,
            "device": DEVICES, "dtype": DTYPES}


def _default_text(name: str) -> str:
    """The default for --help: TrainConfig's value, or what unset means (said in FIELD_HELP)."""
    v = next(f.default for f in fields(TrainConfig) if f.name == name)
    if v is None:
        return ""
    if isinstance(v, bool):
        return " (default: on)" if v else " (default: off)"
    if v == "":
        return "" if name in ("data", "out") else " (default: none)"
    return f" (default: {v:,})" if isinstance(v, int) and v >= 10_000 else f" (default: {v})"


def _to_int(s: str) -> int:
    """An integer flag's value. argparse reports only ArgumentTypeError as a usage error (prefixed
    with the flag); a FwlabError would escape parse_args as a traceback."""
    try:
        return parse_count(s, "")
    except FwlabError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_train_args(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                   required: tuple[str, ...] = (), helps: dict | None = None) -> None:
    """One flag per TrainConfig field (--max-iters for max_iters); defaults are left as None so
    that only flags the user actually gave override a config (see config_from_args). Help:
    FIELD_HELP's, or `helps`' for the fields a command means otherwise, and the default."""
    hints = typing.get_type_hints(TrainConfig)
    g = parser.add_argument_group("training options")
    for f in fields(TrainConfig):
        if f.name in skip:
            continue
        tp, _ = _base_type(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        choices = _CHOICES.get(f.name)
        metavar = "{" + ",".join(choices) + "}" if choices else None
        help_ = ((helps or {}).get(f.name, FIELD_HELP[f.name])
                 + _default_text(f.name).replace("%", "%%"))
        if tp is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                           help=help_)
        else:
            conv = _to_int if tp is int else tp
            g.add_argument(flag, dest=f.name, type=conv, default=None, required=f.name in required,
                           metavar=metavar, help=help_)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """TrainConfig from parsed flags: flags given override `base` (or the defaults)."""
    cfg = dataclasses.replace(base) if base is not None else TrainConfig()
    for f in fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            setattr(cfg, f.name, str(resolve_path(v)) if f.name in _PATH_FIELDS and v else v)
    return cfg


def overrides_from_args(args: argparse.Namespace) -> dict:
    """Only the training flags the user gave, as a dict (for sweeps to pass on to each run)."""
    return {f.name: getattr(args, f.name) for f in fields(TrainConfig)
            if getattr(args, f.name, None) is not None}


# notebooks/02_train.ipynb's parameters are TrainConfig's fields, plus its own: data_dir and run_dir
# (the names a person types with `papermill -p` for data and out), extra (a dict of any other field)
# and config_file (a whole config as JSON: what `fwlab sweep` hands each run).
NOTEBOOK_NAMES = {"data_dir": "data", "run_dir": "out"}
_PATH_FIELDS = ("data", "out", "init_from", "hellaswag_data")
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "final", "cfg"}


def _coerce(name: str, value, tp, optional: bool):
    """A notebook parameter checked against its TrainConfig field's type."""
    def bad(want):
        raise FwlabError(f"parameter {name}={value!r}: expected {want}")
    if value is None:
        return None if optional else bad(tp.__name__)
    if tp is bool:
        return value if isinstance(value, bool) else bad("True or False" + (" or None" if optional else ""))
    if tp is int:
        return parse_count(value, f"parameter {name}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            bad("a number")
        try:
            return float(value)
        except ValueError:
            bad("a number")
    if name == "ckpt_at" and isinstance(value, (list, tuple, int)) and not isinstance(value, bool):
        return ",".join(str(parse_count(v, f"parameter {name}"))
                        for v in (value if isinstance(value, (list, tuple)) else [value]))
    return value if isinstance(value, str) else bad("a string")


def config_from_params(params: dict) -> TrainConfig:
    """The training notebook's parameters -> a validated TrainConfig. Names are TrainConfig's
    fields (data_dir and run_dir stand for data and out); `extra` is a dict of any other fields.
    An unknown name or a value of the wrong type or range raises FwlabError naming it; relative
    paths follow utils.resolve_path (from the repository root)."""
    params = dict(params)
    extra = params.pop("extra", None) or {}
    if not isinstance(extra, dict):
        raise FwlabError(f"parameter extra={extra!r}: expected a dict of TrainConfig fields")
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in fields(TrainConfig)}
    values: dict = {}
    for name, value in list(params.items()) + list(extra.items()):
        key = NOTEBOOK_NAMES.get(name, name)
        if key not in known:
            raise FwlabError(_unknown(name, known))
        if key in values and values[key] != value:
            raise FwlabError(f"parameter {name!r} given twice with different values")
        values[key] = _coerce(name, value, *_base_type(hints[key]))
    for key in _PATH_FIELDS:
        if values.get(key):
            values[key] = str(resolve_path(values[key]))
    return TrainConfig(**values).validate()


def _unknown(name: str, known) -> str:
    names = sorted((set(known) - set(NOTEBOOK_NAMES.values())) | set(NOTEBOOK_NAMES)
                   | {"extra", "config_file"})
    close = difflib.get_close_matches(name, names, n=1)
    return f"unknown parameter {name!r}" + (f"; did you mean {close[0]!r}?" if close else
                                            f"; known: {', '.join(names)}")


def notebook_config(namespace: dict) -> TrainConfig:
    """The training notebook's TrainConfig, from its namespace (globals() after the parameters cell
    and the one papermill injects): the JSON file `config_file` when one is given (what a sweep
    hands a run; it validated it when planning, the trainer checks it again), else the parameters
    (config_from_params). In a Jupyter kernel a FwlabError from here on shows as its one line, not
    a traceback: "unknown parameter 'max_iter'; did you mean 'max_iters'?"."""
    _short_errors(namespace)
    params = {k: v for k, v in namespace.items() if not k.startswith("_")
              and k not in _KERNEL_NAMES
              and isinstance(v, (bool, int, float, str, list, tuple, dict, type(None)))}
    path = params.pop("config_file", None)
    if path:
        return TrainConfig.from_dict(read_json(resolve_path(path)))
    return config_from_params(params)


def _short_errors(namespace: dict) -> None:
    """In an IPython kernel, show a FwlabError as its message alone (papermill then ends with it)."""
    get = namespace.get("get_ipython")
    shell = get() if callable(get) else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return

    def one_line(self, etype, value, tb, tb_offset=None):
        self._showtraceback(etype, value, [str(value)])

    shell.set_custom_exc((FwlabError,), one_line)
