"""HellaSwag scoring, sampling, export to transformers, and refusal of bad checkpoints.

Run directories are built here with save_checkpoint and small random GPTs, so these tests do not
depend on the trainer.
"""
import json
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from fwlab import cli, evaluate
from fwlab.checkpoint import save_checkpoint
from fwlab.config import TrainConfig
from fwlab.errors import FwlabError
from fwlab.model import GPT, GPTConfig

TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=128)


def make_run(run_dir, model: GPT, it: int = 10):
    """A run directory as the trainer leaves it: config.json and one checkpoint."""
    opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1)
    save_checkpoint(run_dir, it, dict(
        model=model.state_dict(), optimizer=opt.state_dict(),
        model_config=model.config.to_dict(), config={"preset": "tiny", "seed": 1},
        loader={"position": 0}, rng={"torch": torch.get_rng_state()}))
    (run_dir / "config.json").write_text(json.dumps({"preset": "tiny", **model.config.to_dict()}))
    return run_dir


def spread_gpt(seed: int, **kw) -> GPT:
    """A random GPT with large weights, so its predictions are far from uniform and any scoring
    slip (a shifted target, padding leaking in) moves the numbers."""
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**{**TINY, **kw}))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)
    return m.eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    torch.manual_seed(0)
    return make_run(tmp_path_factory.mktemp("runs") / "tiny", GPT(GPTConfig(**TINY)))


@pytest.fixture(scope="module")
def hs40(hellaswag_path):
    return evaluate.load_hellaswag(str(hellaswag_path), limit=40)[0]


# --- HellaSwag ----------------------------------------------------------------------------------
def slow_scores(model, ex):
    """One ending at a time through plain GPT.forward: sum and count of the ending's log-probs."""
    enc = evaluate.tokenizer()
    ctx = enc.encode(ex["ctx"])
    out = []
    for ending in ex["endings"]:
        end = enc.encode(" " + ending)
        toks = (ctx + end)[-(model.config.block_size + 1):]
        n = min(len(end), len(toks) - 1)
        logits, _ = model(torch.tensor([toks[:-1]]))
        lp = F.log_softmax(logits[0].double(), dim=-1)
        targets = torch.tensor(toks[1:])
        out.append((lp[torch.arange(len(targets)), targets][-n:].sum().item(), n))
    return out


def test_batched_scores_match_slow_loglikelihood(hs40):
    model = spread_gpt(1, block_size=48)  # short enough that some examples are cut from the left
    enc = evaluate.tokenizer()
    examples = hs40[:10]
    longest = max(len(enc.encode(e["ctx"] + " " + x)) for e in examples for x in e["endings"])
    assert longest > 49, "the examples must exercise left truncation"
    sums, counts = evaluate.score_endings(model, examples, "cpu", batch_size=3, progress=False)
    slow = [slow_scores(model, ex) for ex in examples]
    want_sums = torch.tensor([[s for s, _ in row] for row in slow], dtype=torch.float64)
    want_counts = torch.tensor([[n for _, n in row] for row in slow], dtype=torch.float64)
    assert torch.equal(counts, want_counts)
    assert torch.allclose(sums, want_sums, atol=2e-4, rtol=0), (sums - want_sums).abs().max()
    labels = torch.tensor([ex["label"] for ex in examples])
    res = evaluate.hellaswag_eval(model, examples, "cpu", batch_size=4, progress=False)
    assert res["n"] == 10
    assert res["acc"] == pytest.approx((want_sums.argmax(1) == labels).double().mean().item())
    norm = want_sums / want_counts
    assert res["acc_norm"] == pytest.approx((norm.argmax(1) == labels).double().mean().item())


def test_labels_line_up_with_scores(hs40):
    """A GPT rigged into a unigram model that favours the tokens of each correct ending (and of no
    wrong one) must find the labels: examples are scored out of order and put back."""
    enc = evaluate.tokenizer()
    good, bad = set(), set()
    for ex in hs40:
        for i, e in enumerate(ex["endings"]):
            (good if i == ex["label"] else bad).update(enc.encode(" " + e))
    m = GPT(GPTConfig(**TINY))
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        # blocks add nothing, ln_f outputs e_0 whatever its input, so logits = wte[:, 0]
        m.transformer.wte.weight[list(good - bad), 0] = 8.0
        m.transformer.ln_f.bias[0] = 1.0
    res = evaluate.hellaswag_eval(m.eval(), hs40, "cpu", batch_size=3, progress=False)
    assert res["acc_norm"] >= 0.9, res


def test_random_model_scores_near_chance(hellaswag_path):
    torch.manual_seed(1234)
    model = GPT(GPTConfig(**TINY)).eval()
    examples, source = evaluate.load_hellaswag(str(hellaswag_path), limit=300)
    assert source == str(hellaswag_path) and len(examples) == 300
    res = evaluate.hellaswag_eval(model, examples, "cpu", progress=False)
    assert res["n"] == 300
    assert 0.18 < res["acc_norm"] < 0.32, res


def test_cli_eval_writes_eval_hellaswag_json(run, hellaswag_path, capsys):
    rc = cli.main(["eval", "hellaswag", "--run", str(run), "--data", str(hellaswag_path),
                   "--limit", "12", "--device", "cpu", "--batch-size", "5"])
    assert rc == 0
    res = json.loads((run / "eval_hellaswag.json").read_text())
    assert res["n"] == 12 and res["limit"] == 12 and res["iter"] == 10
    assert res["data"] == str(hellaswag_path) and 0 <= res["acc_norm"] <= 1
    assert json.loads(capsys.readouterr().out.split("\nwrote ")[0]) == res
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_hub_offline_fails_fast_pointing_at_data():
    t0 = time.time()
    with pytest.raises(FwlabError, match="--data"):
        evaluate.load_hellaswag(None, limit=5)
    assert time.time() - t0 < 30


def test_bad_hellaswag_file_names_the_line(tmp_path, hs40):
    f = tmp_path / "hs.jsonl"
    rows = [json.dumps(hs40[0]), json.dumps({**hs40[1], "label": 7})]
    f.write_text("\n".join(rows) + "\n")
    with pytest.raises(FwlabError, match=r"hs\.jsonl:2: .*label"):
        evaluate.load_hellaswag(str(f))
    # the hub's layout: ctx_a/ctx_b and a string label
    f.write_text(json.dumps({"ctx_a": "A man sits.", "ctx_b": "he", "endings": list("abcd"),
                             "label": "2"}) + "\n")
    ex = evaluate.load_hellaswag(str(f))[0]
    assert ex == [{"ctx": "A man sits. he", "endings": list("abcd"), "label": 2}]


# --- sampling -----------------------------------------------------------------------------------
def test_sample_is_deterministic_per_seed(run):
    model = spread_gpt(2)
    rng = torch.get_rng_state()
    a = evaluate.sample(model, "The cat", tokens=12, temperature=1.0, seed=7, num_samples=2)
    b = evaluate.sample(model, "The cat", tokens=12, temperature=1.0, seed=7, num_samples=2)
    c = evaluate.sample(model, "The cat", tokens=12, temperature=1.0, seed=8, num_samples=2)
    assert a == b and a != c
    assert len(a) == 2 and a[0] != a[1] and all(t.startswith("The cat") for t in a)
    assert torch.equal(torch.get_rng_state(), rng), "sampling must not move the global RNG"


def test_cli_sample_prints_samples(run, capsys):
    args = ["sample", "--run", str(run), "--prompt", "Hello", "--tokens", "8", "--seed", "3",
            "--device", "cpu"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first and "\nHello" in first


def test_periodic_extras(hellaswag_path):
    model = spread_gpt(3).train()
    cfg = TrainConfig(hellaswag_every=3, hellaswag_limit=8, hellaswag_data=str(hellaswag_path),
                      sample_every=4, max_iters=10, seed=1)
    rng = torch.get_rng_state()
    assert evaluate.periodic_extras(model, cfg, 0, "cpu") == {}
    assert evaluate.periodic_extras(model, cfg, 5, "cpu") == {}
    at3 = evaluate.periodic_extras(model, cfg, 3, "cpu")
    assert set(at3) == {"hellaswag_acc_norm", "hellaswag_acc", "hellaswag_n"} and at3["hellaswag_n"] == 8
    at10 = evaluate.periodic_extras(model, cfg, 10, "cpu")  # the last step: everything
    assert set(at10) == set(at3) | {"sample"} and at10["hellaswag_acc"] == at3["hellaswag_acc"]
    assert isinstance(at10["sample"], str) and at10["sample"]
    assert [it for it in range(11) if evaluate._due(4, it, 10)] == [4, 8, 10]
    assert model.training and torch.equal(torch.get_rng_state(), rng)


# --- export -------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_export_roundtrip_logits_match(tmp_path, hs40, bias):
    transformers = pytest.importorskip("transformers")
    model = spread_gpt(4, bias=bias)
    run = make_run(tmp_path / "run", model, it=20)
    out = tmp_path / "hf"
    info = evaluate_export(run, out)
    assert info["iter"] == 20 and info["max_abs_logit_diff"] < 1e-4 and info["tokenizer"]
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(out)).float().eval()
    assert hf.config.vocab_size == 50304 and hf.config.n_positions == 128
    enc = evaluate.tokenizer()
    toks = torch.tensor([enc.encode(hs40[0]["ctx"] + " " + hs40[0]["endings"][0])])
    with torch.no_grad():
        diff = (model(toks)[0] - hf(toks).logits).abs().max().item()
    assert diff < 1e-4
    tok = transformers.AutoTokenizer.from_pretrained(str(out))
    text = hs40[3]["ctx"]
    assert tok(text)["input_ids"] == enc.encode(text)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def evaluate_export(run, out, **kw):
    from fwlab.export import export_hf
    return export_hf(run, out, **kw)


def test_export_keeps_existing_out_unless_overwrite(tmp_path, run):
    pytest.importorskip("transformers")
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(FwlabError, match="--overwrite"):
        evaluate_export(run, out, verify=False)
    assert (out / "mine.txt").exists()
    # --overwrite replaces only an earlier export: a file fwlab did not write is never deleted
    with pytest.raises(FwlabError, match="mine.txt"):
        evaluate_export(run, out, overwrite=True, verify=False)
    assert (out / "mine.txt").read_text() == "keep me"
    (out / "mine.txt").unlink()
    evaluate_export(run, out, verify=False)
    first = (out / "fwlab_export.json").stat().st_mtime_ns
    evaluate_export(run, out, overwrite=True, verify=False)
    assert (out / "model.safetensors").exists() and (out / "fwlab_export.json").stat().st_mtime_ns >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


# --- bad checkpoints ----------------------------------------------------------------------------
def _corrupt(kind, path, good: bytes):
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "random-bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "foreign-torch-file":
        torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    elif kind == "pickled-object":  # needs code to load: weights_only refuses it
        import argparse
        torch.save(argparse.Namespace(model={"w": torch.zeros(3)}, format="fwlab-ckpt-1"), path)


@pytest.mark.parametrize("kind", ["truncated", "random-bytes", "foreign-torch-file", "pickled-object"])
def test_corrupt_checkpoints_refused_by_cli(tmp_path, run, kind, hellaswag_path, capsys):
    good = (run / "ckpt" / "ckpt_0000010.pt").read_bytes()
    bad_run = tmp_path / "bad"
    (bad_run / "ckpt").mkdir(parents=True)
    ck = bad_run / "ckpt" / "ckpt_0000010.pt"
    _corrupt(kind, ck, good)
    for args in (["sample", "--run", str(bad_run), "--device", "cpu", "--tokens", "2"],
                 ["eval", "hellaswag", "--run", str(bad_run), "--data", str(hellaswag_path),
                  "--limit", "2", "--device", "cpu"],
                 ["export", "--run", str(bad_run), "--out", str(tmp_path / "hf")]):
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err and str(ck) in err, err
    assert not (tmp_path / "hf").exists()


def test_truncated_checkpoint_process_exit(tmp_path, run):
    """The whole process: exit status 2, one line on stderr, no traceback."""
    good = (run / "ckpt" / "ckpt_0000010.pt").read_bytes()
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "ckpt_0000010.pt").write_bytes(good[:-100])
    p = subprocess.run([sys.executable, "-m", "fwlab", "sample", "--run", str(tmp_path),
                        "--device", "cpu"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("fwlab sample: error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr
