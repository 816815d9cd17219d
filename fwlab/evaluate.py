"""Using a trained run: HellaSwag accuracy and text samples (export lives in fwlab/export.py).

HellaSwag is scored completion-style, as in the GPT-2/GPT-3 papers, nanoGPT/llm.c and the
lm-evaluation-harness: for each of the 4 endings, the sum of the log-likelihoods of the ending's
tokens given the context. `acc` picks the ending with the largest sum; `acc_norm` the largest mean
per token (the length-normalised score usually quoted for small models: a sum favours short endings).
Random guessing gives 25%; GPT-2 124M scores about 29.5% acc_norm on this scoring.

The same functions run periodically inside training (see `periodic_extras`), on a fixed subset of the
validation set so that points from different iterations compare.
"""
from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fwlab import hardware
from fwlab.checkpoint import load_model
from fwlab.errors import FwlabError
from fwlab.utils import atomic_write_json

HUB_DATASET = "Rowan/hellaswag"
N_ENDINGS = 4


# --- devices and the tokenizer -------------------------------------------------------------------
def resolve_device(device="auto") -> str:
    """A device name ('auto' -> cuda > mps > cpu, see fwlab.hardware); torch.device accepted."""
    if isinstance(device, torch.device):
        return str(device)
    return str(hardware.resolve_device(device or "auto"))


def _autocast(device: str):
    """bf16 autocast on CUDA, as training resolves it there (the model casts logits to fp32 for
    the loss); exact fp32 elsewhere."""
    dev = torch.device(device)
    dtype = hardware.resolve_dtype("auto", dev) if dev.type == "cuda" else "float32"
    return hardware.autocast(dev, dtype)


def tokenizer():
    import tiktoken
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as e:
        raise FwlabError(f"cannot load the GPT-2 tokenizer ({type(e).__name__}); offline, set "
                         "TIKTOKEN_CACHE_DIR to a folder holding tiktoken's cached GPT-2 files") from None


# --- HellaSwag data ------------------------------------------------------------------------------
def _example(rec: dict, where: str) -> dict:
    """{ctx, endings, label} from either the original file's or the hub's record layout."""
    if not isinstance(rec, dict):
        raise FwlabError(f"{where}: expected a JSON object per line")
    ctx = rec.get("ctx")
    if not ctx and ("ctx_a" in rec or "ctx_b" in rec):
        ctx = f"{rec.get('ctx_a', '')} {rec.get('ctx_b', '')}".strip()
    endings, label = rec.get("endings"), rec.get("label")
    if not isinstance(ctx, str) or not ctx:
        raise FwlabError(f"{where}: no context (field 'ctx' or 'ctx_a'/'ctx_b')")
    if (not isinstance(endings, list) or len(endings) != N_ENDINGS
            or not all(isinstance(e, str) for e in endings)):
        raise FwlabError(f"{where}: field 'endings' must be a list of {N_ENDINGS} strings")
    try:
        label = int(label)  # the hub stores it as a string
    except (TypeError, ValueError):
        raise FwlabError(f"{where}: field 'label' must be 0..3, got {label!r} "
                         "(the test split has no labels: use the validation file)") from None
    if not 0 <= label < N_ENDINGS:
        raise FwlabError(f"{where}: field 'label' must be 0..3, got {label}")
    return {"ctx": ctx, "endings": endings, "label": label}


def load_hellaswag(data: str | None = None, limit: int | None = None) -> tuple[list[dict], str]:
    """(examples, source): the first `limit` validation examples from a local .jsonl/.jsonl.gz
    (original `hellaswag_val.jsonl` or hub layout), or from the hub when `data` is None."""
    if limit is not None and limit <= 0:
        raise FwlabError(f"--limit {limit}: must be a positive number of examples")
    if data:
        path = Path(data)
        if not path.is_file():
            raise FwlabError(f"{path}: HellaSwag file not found (expected hellaswag_val.jsonl[.gz])")
        opener = gzip.open if path.suffix == ".gz" else open
        out = []
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                for i, line in enumerate(f, 1):
                    if limit is not None and len(out) >= limit:
                        break
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        raise FwlabError(f"{path}:{i}: not valid JSON") from None
                    out.append(_example(rec, f"{path}:{i}"))
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise FwlabError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
        if not out:
            raise FwlabError(f"{path}: no HellaSwag examples in the file")
        return out, str(path)
    return _load_hub(limit), f"hf:{HUB_DATASET}"


def _load_hub(limit: int | None) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise FwlabError("the `datasets` package is missing; pass --data PATH to a local "
                         "hellaswag_val.jsonl[.gz] or `pip install datasets`") from None
    try:
        try:
            ds = datasets.load_dataset(HUB_DATASET, split="validation")
        except RuntimeError as e:  # a copy that still ships a loading script: use the parquet export
            if "script" not in str(e).lower():
                raise
            ds = datasets.load_dataset(HUB_DATASET, split="validation", revision="refs/convert/parquet")
    except FwlabError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise FwlabError(f"cannot load {HUB_DATASET} from the Hugging Face hub ({msg}); offline, "
                         "pass --data PATH to a local hellaswag_val.jsonl[.gz]") from None
    n = len(ds) if limit is None else min(limit, len(ds))
    return [_example(ds[i], f"hf:{HUB_DATASET} validation row {i}") for i in range(n)]


# --- scoring -------------------------------------------------------------------------------------
def _rows(enc, ex: dict, max_len: int) -> list[tuple[list[int], int]]:
    """Per ending: (tokens of context + " " + ending, number of ending tokens that are scored).
    Cut from the left to max_len + 1 tokens: the model reads at most block_size of them."""
    ctx = enc.encode_ordinary(ex["ctx"])
    rows = []
    for ending in ex["endings"]:
        end = enc.encode_ordinary(" " + ending)
        toks = (ctx + end)[-(max_len + 1):]
        rows.append((toks, min(len(end), len(toks) - 1)))
    return rows


def _target_logprobs(model, x, y, mask) -> torch.Tensor:
    """log p(y) at the masked positions only, fp32: the model's own forward (GPT.hidden), with the
    50,304-wide head run on the ending's positions alone: several times less work and memory than
    logits for every context token. (tests/test_evaluate.py checks it against plain forward.)"""
    logits = model.lm_head(model.hidden(x)[mask]).float()
    return logits.log_softmax(dim=-1).gather(1, y[mask].unsqueeze(1)).squeeze(1)


@torch.no_grad()
def score_endings(model, examples: list[dict], device: str = "cpu", batch_size: int | None = None,
                  progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of ending-token log-likelihoods, number of ending tokens), both (n_examples, 4) float64.

    Several examples per forward pass (4 rows each), right-padded; padding never influences the
    real positions (causal attention) and is masked out of the sums. Examples are batched longest
    first, so similar lengths share a batch and an out-of-memory error shows in the first batch."""
    device = resolve_device(device)
    if batch_size is None:  # 0 is refused below, not taken for the default
        batch_size = 32 if torch.device(device).type == "cuda" else 4
    if batch_size <= 0:
        raise FwlabError(f"--batch-size {batch_size}: must be positive")
    enc = tokenizer()
    max_len = model.config.block_size
    rows = [_rows(enc, ex, max_len) for ex in examples]
    order = sorted(range(len(rows)), key=lambda i: -max(len(t) for t, _ in rows[i]))
    sums = torch.zeros(len(rows), N_ENDINGS, dtype=torch.float64)
    counts = torch.zeros(len(rows), N_ENDINGS, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for b in tqdm(range(0, len(order), batch_size), desc="hellaswag", unit="batch",
                      disable=not progress):
            idx = order[b:b + batch_size]
            flat = [r for i in idx for r in rows[i]]
            T = max(len(t) for t, _ in flat) - 1
            x = torch.zeros(len(flat), T, dtype=torch.long)
            y = torch.full((len(flat), T), -100, dtype=torch.long)  # -100: not scored
            for r, (toks, n_end) in enumerate(flat):
                L = len(toks)
                x[r, :L - 1] = torch.tensor(toks[:-1])
                # only the ending's tokens are targets; the context's are ignored
                y[r, L - 1 - n_end:L - 1] = torch.tensor(toks[L - n_end:])
            x, y = x.to(device), y.to(device)
            mask = y != -100
            with _autocast(device):
                lp = _target_logprobs(model, x, y, mask)
            row = mask.nonzero()[:, 0]  # the row of each scored position, in the order of lp
            s = torch.zeros(len(flat), device=lp.device, dtype=torch.float32).index_add_(0, row, lp)
            sums[idx] = s.double().cpu().view(len(idx), N_ENDINGS)
            counts[idx] = mask.sum(dim=1).double().cpu().view(len(idx), N_ENDINGS)
    finally:
        model.train(was_training)
    return sums, counts


def hellaswag_eval(model, examples: list[dict], device: str = "cpu", batch_size: int | None = None,
                   progress: bool = True) -> dict:
    """{acc, acc_norm, acc_stderr, acc_norm_stderr, n} of `model` on `examples`."""
    if not examples:
        raise FwlabError("no HellaSwag examples to evaluate")
    sums, counts = score_endings(model, examples, device, batch_size, progress)
    labels = torch.tensor([ex["label"] for ex in examples])
    n = len(examples)
    acc = (sums.argmax(dim=1) == labels).double().mean().item()
    acc_norm = ((sums / counts.clamp(min=1)).argmax(dim=1) == labels).double().mean().item()
    return {"acc": acc, "acc_norm": acc_norm, "n": n,
            "acc_stderr": math.sqrt(acc * (1 - acc) / n),
            "acc_norm_stderr": math.sqrt(acc_norm * (1 - acc_norm) / n)}


def evaluate_run(run_dir, ckpt: int | None = None, data: str | None = None, limit: int | None = None,
                 device: str = "auto", batch_size: int | None = None, progress: bool = True) -> dict:
    """HellaSwag of a run's checkpoint (default: newest); writes RUN/eval_hellaswag.json."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FwlabError(f"{run}: run directory not found")
    device = resolve_device(device)
    model, meta = load_model(run, ckpt, device)  # a bad checkpoint fails before any download
    examples, source = load_hellaswag(data, limit)
    t0 = time.time()
    res = hellaswag_eval(model, examples, device, batch_size, progress)
    res.update(iter=int(meta["iter"]), ckpt=meta["path"], data=source, limit=limit, device=device,
               n_params=model.num_params(), elapsed_s=round(time.time() - t0, 3))
    atomic_write_json(run / "eval_hellaswag.json", res)
    return res


# --- sampling ------------------------------------------------------------------------------------
def sample(model, prompt: str = "", tokens: int = 100, temperature: float = 0.8,
           top_k: int | None = 200, seed: int = 1337, num_samples: int = 1,
           device: str = "cpu") -> list[str]:
    """`num_samples` continuations of `prompt` (the prompt included); an empty prompt starts from
    <|endoftext|>, i.e. a new document. The same seed gives the same text (its own generator: the
    global RNG, and so a training run's, is untouched); temperature 0 is greedy."""
    if tokens < 0:
        raise FwlabError(f"--tokens {tokens}: must be >= 0")
    if num_samples < 1:
        raise FwlabError(f"--num-samples {num_samples}: must be >= 1")
    if not math.isfinite(temperature) or temperature < 0:  # nan: a traceback in torch.multinomial
        raise FwlabError(f"--temperature {temperature}: must be a finite number >= 0 (0 = greedy)")
    if top_k is not None and top_k < 0:
        raise FwlabError(f"--top-k {top_k}: must be >= 0 (0 = no cut-off)")
    device = resolve_device(device)
    enc = tokenizer()
    start = enc.encode_ordinary(prompt) if prompt else [enc.eot_token]
    idx = torch.tensor([start] * num_samples, dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with _autocast(device):
            out = model.generate(idx, tokens, temperature=temperature, top_k=top_k or None,
                                 generator=gen)
    finally:
        model.train(was_training)
    # ids past 50,256 are the vocabulary's padding: never trained, not decodable
    return [prompt + enc.decode([t for t in row[len(start):].tolist() if t < enc.n_vocab])
            for row in out]


# --- periodic use inside training -----------------------------------------------------------------
_SUBSETS: dict = {}


def hellaswag_during_training(model, cfg, device: str) -> dict:
    """{hellaswag_acc_norm, hellaswag_acc, hellaswag_n} on the first cfg.hellaswag_limit examples
    (0 = all) of cfg.hellaswag_data (empty = the hub); the subset is read once per process."""
    key = (cfg.hellaswag_data or None, cfg.hellaswag_limit or None)
    if key not in _SUBSETS:
        _SUBSETS[key] = load_hellaswag(*key)[0]
    r = hellaswag_eval(model, _SUBSETS[key], device, progress=False)
    return {"hellaswag_acc_norm": r["acc_norm"], "hellaswag_acc": r["acc"], "hellaswag_n": r["n"]}


def sample_during_training(model, cfg, device: str, prompt: str = "", tokens: int = 64) -> str:
    """One sample with the run's seed, so samples from different iterations compare."""
    return sample(model, prompt, tokens, temperature=0.8, top_k=200, seed=cfg.seed, num_samples=1,
                  device=device)[0]


def _due(every: int, it: int, max_iters: int) -> bool:
    return every > 0 and it > 0 and (it % every == 0 or it == max_iters)


def periodic_extras(model, cfg, it: int, device: str) -> dict:
    """The extra metrics due after optimizer step `it` ({} when none is): HellaSwag every
    cfg.hellaswag_every steps, a sample every cfg.sample_every steps, both also at the last step.
    Pass the plain model (not DDP-wrapped, not compiled); call on rank 0 only."""
    out = {}
    if _due(cfg.hellaswag_every, it, cfg.max_iters):
        out.update(hellaswag_during_training(model, cfg, device))
    if _due(cfg.sample_every, it, cfg.max_iters):
        out["sample"] = sample_during_training(model, cfg, device)
    return out


# --- CLI entry points ----------------------------------------------------------------------------
def main_hellaswag(a) -> int:
    res = evaluate_run(a.run, ckpt=a.ckpt, data=a.data, limit=a.limit, device=a.device,
                       batch_size=getattr(a, "batch_size", None))
    print(json.dumps(res, indent=2, sort_keys=True))
    print(f"wrote {Path(a.run) / 'eval_hellaswag.json'}")
    return 0


def main_sample(a) -> int:
    device = resolve_device(a.device)
    model, meta = load_model(a.run, a.ckpt, device)
    texts = sample(model, a.prompt, a.tokens, a.temperature, a.top_k, a.seed, a.num_samples, device)
    for i, text in enumerate(texts, 1):
        print(f"--- sample {i}/{len(texts)} (iter {meta['iter']}, seed {a.seed}) ---")
        print(text)
    return 0

