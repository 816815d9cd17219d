"""`fwlab export`: a run's checkpoint as a Hugging Face transformers GPT-2 model directory.

fwlab's GPT uses GPT-2's parameter names, so the mapping is one to one except that transformers'
GPT-2 stores its four matmuls as `Conv1D` (weight shaped in x out), the transpose of `nn.Linear`.
The head is tied to the token embedding, so only `transformer.wte.weight` is stored. The vocabulary
stays padded at 50,304 rows so that logits match fwlab's exactly; rows 50,257..50,303 belong to no
token. The export is written to a temporary folder, checked (transformers loads it and its fp32
logits match fwlab's), and only then renamed to its final name.

transformers and safetensors are an optional extra: `pip install -e '.[export]'`.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from fwlab.checkpoint import load_model
from fwlab.errors import FwlabError, WriteError, os_problem, os_where
from fwlab.utils import UMASK, fwlab_inside

EOT = 50256
N_TOKENS = 50257
MAX_LOGIT_DIFF = 1e-4
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# tiktoken's own copies of OpenAI's GPT-2 tokenizer files, which are exactly Hugging Face's
# vocab.json and merges.txt (URL, sha256 that tiktoken checks)
_TOKENIZER_FILES = {
    "vocab.json": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
                   "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "merges.txt": ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
                   "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}


def _extras():
    try:
        import safetensors.torch
        import transformers
    except ImportError as e:
        raise FwlabError(f"exporting needs the optional packages transformers and safetensors "
                         f"({e.name} is missing): pip install -e '.[export]'") from None
    return transformers, safetensors.torch


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """fwlab GPT state -> transformers GPT2LMHeadModel state (fp32, contiguous, head untied)."""
    out = {}
    for k, v in model.state_dict().items():
        k = k.removeprefix("_orig_mod.")
        if k == "lm_head.weight":
            continue  # tied: transformers rebuilds it from transformer.wte.weight
        if k.endswith(_CONV1D):
            v = v.t()
        out[k] = v.detach().to("cpu", torch.float32).contiguous().clone()
    # a bias=False model: GPT-2 always has biases, and zeros are the same function
    for name, m in model.named_modules():
        if name != "lm_head" and isinstance(m, (nn.Linear, nn.LayerNorm)) and m.bias is None:
            out.setdefault(f"{name}.bias", torch.zeros(m.weight.shape[0]))
    return out


def hf_config(transformers, mc) -> "transformers.GPT2Config":
    return transformers.GPT2Config(
        vocab_size=mc.vocab_size, n_positions=mc.block_size, n_embd=mc.n_embd, n_layer=mc.n_layer,
        n_head=mc.n_head, n_inner=4 * mc.n_embd, activation_function="gelu_new",
        resid_pdrop=mc.dropout, embd_pdrop=mc.dropout, attn_pdrop=mc.dropout,
        layer_norm_epsilon=1e-5, bos_token_id=EOT, eos_token_id=EOT, tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )


def _write_tokenizer(d: Path, block_size: int) -> str | None:
    """vocab.json + merges.txt from tiktoken's cache (offline when TIKTOKEN_CACHE_DIR holds them);
    None when written, else why not."""
    try:
        from tiktoken.load import read_file_cached
        blobs = {name: read_file_cached(url, sha) for name, (url, sha) in _TOKENIZER_FILES.items()}
    except Exception as e:
        return f"GPT-2 tokenizer files unavailable ({type(e).__name__}); set TIKTOKEN_CACHE_DIR"
    for name, blob in blobs.items():
        (d / name).write_bytes(blob)
    special = "<|endoftext|>"
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": block_size,
        "bos_token": special, "eos_token": special, "unk_token": special,
        "add_prefix_space": False}, indent=2) + "\n")
    (d / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": special, "eos_token": special, "unk_token": special}, indent=2) + "\n")
    return None


def _readme(info: dict) -> str:
    diff = info["max_abs_logit_diff"]
    check = ("Not checked at export (--no-verify)." if diff is None else
             f"Checked at export: fp32 logits of this folder under transformers differ from "
             f"fwlab's by at most {diff:.2e}.")
    tok = ("vocab.json + merges.txt: OpenAI's GPT-2 BPE (identical to tiktoken `gpt2`)."
           if info["tokenizer"] else f"No tokenizer files: {info['tokenizer_note']}. Use "
           "`tiktoken.get_encoding('gpt2')` or the `gpt2` tokenizer from the hub.")
    return f"""# fwlab GPT exported to transformers GPT-2

Source run: `{info['run']}`, checkpoint iteration {info['iter']} (`{info['ckpt']}`),
{info['n_params']:,} parameters (tied embeddings).

```python
from transformers import GPT2LMHeadModel
model = GPT2LMHeadModel.from_pretrained("{info['out']}")
```

- Vocabulary: {info['vocab_size']} rows, padded from GPT-2's 50,257 tokens to a multiple of 64 for
  speed. The extra {info['vocab_size'] - N_TOKENS} rows (ids {N_TOKENS}..{info['vocab_size'] - 1})
  belong to no token and were never trained targets; slice `logits[..., :{N_TOKENS}]` or mask them
  when sampling.
- Context length {info['n_positions']}; GELU tanh (`gelu_new`); LayerNorm eps 1e-5.
- {tok}
- {check}
"""


def _verify(transformers, d: Path, model) -> float:
    """Max abs difference of fp32 logits, fwlab vs transformers loading `d`, on fixed tokens."""
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(d)).float().eval()
    g = torch.Generator().manual_seed(0)
    T = min(model.config.block_size, 64)
    x = torch.randint(0, N_TOKENS, (2, T), generator=g)
    with torch.no_grad():
        ours, _ = model.float().eval()(x)
        theirs = hf(x).logits
    return (ours - theirs).abs().max().item()


# every file an export folder holds (transformers' save_pretrained + ours): --overwrite replaces a
# folder only when it holds nothing else, so it can never delete a run, a sweep or a user's files
EXPORT_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors",
                          "vocab.json", "merges.txt", "tokenizer_config.json",
                          "special_tokens_map.json", "fwlab_export.json", "README.md"})


def _check_replaceable(out: Path, run: Path) -> None:
    """Refuse to replace `out` unless it is an earlier export holding only export files."""
    keep = "; nothing was changed, choose another --out"
    r, o = run.resolve(), out.resolve()
    if r == o or o in r.parents:
        raise FwlabError(f"--out {out}: holds the run {run} being exported; --overwrite never "
                         f"deletes a run{keep}")
    found = fwlab_inside(out)
    if found and found[1] != "an export" or found and found[0] != out:
        raise FwlabError(f"--out {out}: holds {found[1]} ({found[0]}); --overwrite only replaces "
                         f"an earlier export{keep}")
    foreign = sorted(p.name + ("/" if p.is_dir() else "") for p in out.iterdir()
                     if p.name not in EXPORT_FILES or p.is_symlink() or not p.is_file())
    if foreign:
        raise FwlabError(f"--out {out}: holds files an export does not write "
                         f"({', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                         f"--overwrite never deletes them{keep}")
    if not (out / "fwlab_export.json").is_file():
        raise FwlabError(f"--out {out}: not an fwlab export (no fwlab_export.json); --overwrite "
                         f"only replaces an earlier export{keep}")


def export_hf(run_dir, out_dir, ckpt: int | None = None, overwrite: bool = False,
              verify: bool = True) -> dict:
    """Write a transformers GPT-2 folder for a run's checkpoint (default: newest) to `out_dir`.
    Returns the export's facts (also in OUT/fwlab_export.json)."""
    transformers, st = _extras()
    run, out = Path(run_dir), Path(out_dir)
    if not run.is_dir():
        raise FwlabError(f"{run}: run directory not found")
    if out.exists() and not out.is_dir():
        raise FwlabError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FwlabError(f"--out {out}: directory exists and is not empty; pass --overwrite to "
                             "replace an earlier export or choose another folder")
        _check_replaceable(out, run)
    model, meta = load_model(run, ckpt, "cpu")
    model.float()
    mc = model.config
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:  # read-only, no permission, a parent that is a file
        raise _write_error(out, e) from None
    try:
        hf_config(transformers, mc).save_pretrained(str(tmp))
        st.save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        transformers.GenerationConfig(bos_token_id=EOT, eos_token_id=EOT).save_pretrained(str(tmp))
        note = _write_tokenizer(tmp, mc.block_size)
        diff = _verify(transformers, tmp, model) if verify else None
        if diff is not None and not diff < MAX_LOGIT_DIFF:
            raise RuntimeError(f"exported model disagrees with fwlab: max |logit diff| {diff:.3g}")
        from fwlab import __version__
        info = {"run": str(run), "ckpt": meta["path"], "iter": int(meta["iter"]), "out": str(out),
                "n_params": model.num_params(), "vocab_size": mc.vocab_size,
                "n_positions": mc.block_size, "tokenizer": note is None, "tokenizer_note": note,
                "max_abs_logit_diff": diff, "fwlab_version": __version__}
        (tmp / "fwlab_export.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(_readme(info))
        # mkdtemp/safetensors create owner-only modes; give the export ordinary permissions
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~UMASK)
        os.chmod(tmp, 0o777 & ~UMASK)
        # swap in: an old export is moved aside first and removed only once the new one is in place
        old = None
        if out.is_dir() and any(out.iterdir()):
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        elif out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as e:  # a full disk while writing the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise _write_error(out, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _write_error(out: Path, e: OSError) -> WriteError:
    kept = "; the earlier export there is unchanged" if out.is_dir() and any(out.iterdir()) else ""
    return WriteError(f"--out {out}: cannot write the export ({os_where(e, out)}: "
                      f"{os_problem(e)}); nothing was written{kept}", os_problem(e))


def main_export(a) -> int:
    if a.format != "hf":
        raise FwlabError(f"--format {a.format!r}: only 'hf' is supported")
    info = export_hf(a.run, a.out, ckpt=a.ckpt, overwrite=getattr(a, "overwrite", False),
                     verify=not getattr(a, "no_verify", False))
    print(f"exported {info['ckpt']} (iter {info['iter']}) to {info['out']}")
    if info["max_abs_logit_diff"] is not None:
        print(f"transformers GPT2LMHeadModel loads it; max |logit diff| vs fwlab "
              f"{info['max_abs_logit_diff']:.2e}")
    if info["tokenizer_note"]:
        print(f"note: {info['tokenizer_note']}")
    return 0
