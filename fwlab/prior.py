"""Priors: the final validation loss a budget should reach when no curve of the user's own can say
it (the plan without --from, claims about a setting the source did not train).

published   the parametric fits L(N, D) = E + A/N^α + B/D^β of Hoffmann et al. 2022 and the
            Besiroglu et al. 2024 replication at the preset's parameter count N and the effective
            tokens D' (Muennighoff et al. 2023: fwlab.forecast.effective_tokens). Other data and
            another tokenizer (MassiveText, SentencePiece): its interval is only the spread of the
            two fits, from repeats as good as fresh (D' = D) to D' as above.
calibrated  the same two fits with E refitted to the published FineWeb-Edu run(s) of the
            reference curves (../shared/data/reference-curves, index.csv: the build-nanogpt-recipe
            124M run, 3.0538 after 10.0B tokens): a loss level is mostly a property of the data and
            the tokenizer (GPT-2 BPE here, as in fwlab), the exponents carry over. The interval adds
            how well a one-number calibration carries to other sizes, token counts and recipes:
            ±z·SD (z for LEVEL) of the FineWeb runs' own E about their mean, per fit. Measured on
            the 16 finished FineWeb-10BT runs of that set (124M-1.5B, 1.9-10.3B tokens, AdamW/
            Muon/SOAP/Shampoo): SD 0.089 nats for either fit, so ±0.15 at 90%. Used whenever the
            reference folder is there; the method says which prior answered. For the 40m preset
            on 3.68B tokens it gives 3.64 [3.49, 3.79] at 6k iterations and 3.39 [3.23, 3.55] at
            20k (the published fits: 3.62 [3.60, 3.64] and 3.38 [3.36, 3.39]).

`prior_for` gives the loss per budget in the shape of fwlab.forecast.loss_forecast_for's answer.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fwlab import forecast as fc
from fwlab.importers import default_reference_dir

PRIORS = {
    "hoffmann2022": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28,
                         label="Hoffmann et al. 2022 (Chinchilla, approach 3)"),
    "besiroglu2024": dict(E=1.82, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658,
                          label="Besiroglu et al. 2024 (Chinchilla replication)"),
}
PRIOR_NOTE = ("indicative prior only: published fits on other data and another tokenizer "
              "(MassiveText, SentencePiece), not on your curves")
CALIBRATED_NOTE = ("prior calibrated on published FineWeb-Edu runs, not on your curves: the "
                   "published fits' exponents with their constant refitted")
CALIBRATION_DATASETS = ("FineWeb-Edu", "FineWeb-10BT")  # target, and the spread's
LEVEL = 0.9


def _law(p: dict, n_params: float, d, E: float | None = None):
    return (p["E"] if E is None else E) + p["A"] / n_params ** p["alpha"] + p["B"] / d ** p["beta"]


def prior_loss(n_params: float, tokens, unique_tokens=None, r_star: float = fc.R_STAR) -> dict:
    """L(N, D) of the published fits (PRIORS) at N parameters and `tokens` tokens (array).
    val_loss = mean of the fits at D'; low = the lowest fit at D (repeats as good as fresh);
    high = the highest fit at D'. INDICATIVE PRIOR ONLY (PRIOR_NOTE)."""
    d = np.atleast_1d(np.asarray(tokens, dtype=float))
    dp = d if unique_tokens is None else fc.effective_tokens(d, unique_tokens, r_star)
    at_dp = np.array([_law(p, n_params, dp) for p in PRIORS.values()])
    at_d = np.array([_law(p, n_params, d) for p in PRIORS.values()])
    return dict(val_loss=at_dp.mean(0), low=np.minimum(at_d, at_dp).min(0),
                high=at_dp.max(0), fits={k: at_dp[i] for i, k in enumerate(PRIORS)},
                prior="published",
                method=f"{PRIOR_NOTE}; mean of {' and '.join(p['label'] for p in PRIORS.values())}"
                       f" at N={n_params / 1e6:.1f}M, Muennighoff R*={r_star:g}")


def _finished_runs(root: Path) -> list[dict]:
    """index.csv rows of single published runs (not repeat trials) with a validation curve that
    reaches its planned end, their size and token count known."""
    path = root / "index.csv"
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            try:
                n, tps = float(r["params"]), float(r["tokens_per_step"])
                step, total, loss = int(r["final_step"]), int(r["total_steps"]), float(r["final_loss"])
            except (KeyError, TypeError, ValueError):
                continue
            if r.get("group") or r.get("loss_column") != "val_loss" or step < total - 1:
                continue
            if r.get("dataset") in CALIBRATION_DATASETS and n > 0 and tps > 0:
                out.append(dict(name=r["name"], dataset=r["dataset"], params=n,
                                tokens=step * tps, loss=loss))
    return out


def calibration(root=None, level: float = LEVEL) -> dict | None:
    """The calibrated prior's constants from the reference folder (`root`, default
    fwlab.importers.default_reference_dir()): per fit, E on the FineWeb-Edu runs and the
    half-width z·SD of the FineWeb runs' E; None when the folder or those runs are missing."""
    root = default_reference_dir(root)
    if root is None:
        return None
    runs = _finished_runs(root)
    edu = [r for r in runs if r["dataset"] == CALIBRATION_DATASETS[0]]
    spread = [r for r in runs if r["dataset"] == CALIBRATION_DATASETS[1]]
    if not edu or len(spread) < 3:
        return None
    from scipy.stats import norm
    z = float(norm.ppf(0.5 + level / 2))
    fits = {}
    for k, p in PRIORS.items():
        e = [r["loss"] - _law(p, r["params"], r["tokens"], E=0.0) for r in edu]
        s = [r["loss"] - _law(p, r["params"], r["tokens"], E=0.0) for r in spread]
        fits[k] = dict(E=float(np.mean(e)), half_width=z * float(np.std(s, ddof=1)))
    return dict(fits=fits, root=str(root), runs=[r["name"] for r in edu],
                n_spread=len(spread), level=level,
                label=", ".join(f"{r['name']} ({r['loss']:.4f} after "
                                f"{r['tokens'] / 1e9:.1f}B tokens)" for r in edu))


def calibrated_loss(n_params: float, tokens, unique_tokens, cal: dict,
                    r_star: float = fc.R_STAR) -> dict:
    """L(N, D) of the published fits with the calibrated E (calibration()): val_loss = their mean
    at D'; low = the lowest at D minus its half-width; high = the highest at D' plus its."""
    d = np.atleast_1d(np.asarray(tokens, dtype=float))
    dp = d if unique_tokens is None else fc.effective_tokens(d, unique_tokens, r_star)
    at_dp = np.array([_law(p, n_params, dp, cal["fits"][k]["E"]) for k, p in PRIORS.items()])
    at_d = np.array([_law(p, n_params, d, cal["fits"][k]["E"]) for k, p in PRIORS.items()])
    hw = np.array([cal["fits"][k]["half_width"] for k in PRIORS])[:, None]
    es = ", ".join(f"{v['E']:.3f}" for v in cal["fits"].values())
    return dict(val_loss=at_dp.mean(0), low=(np.minimum(at_d, at_dp) - hw).min(0),
                high=(at_dp + hw).max(0), fits={k: at_dp[i] for i, k in enumerate(PRIORS)},
                prior="calibrated",
                method=f"{CALIBRATED_NOTE} (E = {es}"
                       f" for {' and '.join(p['label'] for p in PRIORS.values())}) on "
                       f"{cal['label']}; interval widened by the {cal['level']:.0%} range of that "
                       f"constant over {cal['n_spread']} FineWeb runs of other sizes and recipes; "
                       f"N={n_params / 1e6:.1f}M, Muennighoff R*={r_star:g}")


def prior_for(budgets, tokens_per_iter: int, data_tokens: float, preset: str,
              reference=None, calibrate: bool = True) -> dict:
    """Predicted final val loss per budget from a prior: the calibrated one when the reference
    folder is there (`reference`: its path, default the one beside the checkout), else the
    published fits. dict(val_loss, low, high, basis='prior', row_basis, prior, method), as
    fwlab.forecast.loss_forecast_for returns for curves."""
    tokens = np.asarray(budgets, dtype=float) * tokens_per_iter
    n = fc.preset_params(preset)
    cal = calibration(reference) if calibrate else None
    out = (calibrated_loss(n, tokens, data_tokens, cal) if cal is not None
           else prior_loss(n, tokens, data_tokens))
    out["basis"] = "prior"
    out["row_basis"] = [f"prior ({out['prior']})"] * len(tokens)
    return out


def is_prior(basis: str | None) -> bool:
    """Whether a row's basis (loss_forecast_for/prior_for row_basis, or a claims basis) is a prior."""
    return bool(basis) and ("prior" in str(basis)) and not str(basis).startswith("measured")

