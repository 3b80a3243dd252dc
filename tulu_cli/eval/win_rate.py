"""AlpacaEval 2's metrics from per-instruction preferences: the win rate and the length-controlled win rate.

A preference is alpaca_eval's number in [1, 2]: 1 the reference output wins, 2 the model's, 1.5 a draw
(0 is read as 1.5); NaN means the judge gave no usable answer. Follows alpaca_eval 0.6.6
(`metrics/helpers.py`, `metrics/glm_winrate.py`):

- `win_rate`: mean of (preference - 1) over the answered instructions; `discrete_win_rate` rounds each
  preference to a win, a loss or a draw (half a win) first.
- `length_controlled_winrate` (GLM `length_controlled_v1`): a logistic regression of the preference on
  tanh(standardised length difference reference - model), the instruction's difficulty and a model
  term, fitted together with the two "gamed" baselines of alpaca_eval's `df_gamed.csv` (weight 0.1 each)
  by 5-fold grouped cross-validation over L1 strengths; its prediction at zero length difference,
  averaged over every instruction, is the win rate the model would have with outputs as long as the
  reference's.

Values are fractions (alpaca_eval reports percentages).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Weight of the gamed baselines' rows in the GLM fit (`regularize_to_baseline_lambda` 0.2, over two baselines).
GAMED_WEIGHT = 0.2 / 2
GLM_FOLDS = 5
GAMED_COLUMNS = ("index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline")


@dataclass(frozen=True)
class GamedBaselines:
    """alpaca_eval's `df_gamed.csv`: the reference model's concise and verbose variants judged against it,
    and each instruction's difficulty."""

    preference: np.ndarray  # in [0, 1] (alpaca_eval's preference - 1)
    std_delta_len: np.ndarray
    instruction_difficulty: np.ndarray
    not_gamed: np.ndarray  # False on the gamed baselines' rows (the file's every row, as released)
    # Difficulty by instruction position: the first row of each `index` (alpaca_eval looks it up by row label).
    difficulty_by_position: dict[int, float]


def load_gamed_baselines(path: str | Path) -> GamedBaselines:
    import pandas as pd

    frame = pd.read_csv(path)
    missing = [column for column in GAMED_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: not alpaca_eval's df_gamed.csv (columns {', '.join(missing)} missing)")
    first = frame.drop_duplicates("index")["instruction_difficulty"]
    return GamedBaselines(preference=frame["preference"].to_numpy(float),
                          std_delta_len=frame["std_delta_len"].to_numpy(float),
                          instruction_difficulty=frame["instruction_difficulty"].to_numpy(float),
                          not_gamed=frame["not_gamed_baseline"].to_numpy(bool),
                          difficulty_by_position={int(k): float(v) for k, v in first.items()})


def _sem(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def win_rates(preferences: list[float]) -> dict[str, float]:
    values = np.array([1.5 if p == 0 else p for p in preferences], dtype=float)
    answered = values[~np.isnan(values)] - 1.0
    discrete = np.where(answered == 0.5, 0.5, np.round(answered))
    return {"win_rate": float(answered.mean()) if len(answered) else float("nan"),
            "standard_error": _sem(answered),
            "discrete_win_rate": float(discrete.mean()) if len(discrete) else float("nan")}


def length_controlled_win_rate(preferences: list[float], reference_lengths: list[int], model_lengths: list[int],
                               positions: list[int], gamed: GamedBaselines) -> dict[str, float]:
    """The length-controlled win rate and its standard error; instruction `positions` index the eval set
    (and so the difficulties)."""
    from sklearn import config_context
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GroupKFold

    unknown = [p for p in positions if p not in gamed.difficulty_by_position]
    if unknown:
        raise ValueError(f"no instruction difficulty for eval rows {unknown[:5]} (the GLM data covers "
                         f"{len(gamed.difficulty_by_position)} instructions)")
    preference = np.array([1.5 if p == 0 else p for p in preferences], dtype=float) - 1.0
    delta = np.array(reference_lengths, dtype=float) - np.array(model_lengths, dtype=float)
    std_delta_len = delta / np.std(delta, ddof=1)
    difficulty = np.array([gamed.difficulty_by_position[p] for p in positions])

    def features(std_delta, difficulty_values, not_gamed):
        return np.column_stack([np.tanh(std_delta), difficulty_values, not_gamed.astype(float)])

    ones = np.ones(len(preference))
    train_x = np.concatenate([features(gamed.std_delta_len, gamed.instruction_difficulty, gamed.not_gamed),
                              features(std_delta_len, difficulty, ones)])
    train_p = np.concatenate([gamed.preference, preference])
    weight = np.concatenate([np.where(gamed.not_gamed, 1.0, GAMED_WEIGHT), ones])
    kept = ~np.isnan(train_p)
    train_x, train_p, weight = train_x[kept], train_p[kept], weight[kept]

    # Soft labels: every row twice, labelled 1 with weight p and 0 with weight 1 - p (each times its weight).
    rows = len(train_p)
    x = np.concatenate([train_x, train_x])
    y = np.concatenate([np.ones(rows), np.zeros(rows)])
    true_prob = np.concatenate([train_p, 1 - train_p])
    true_weight = np.concatenate([weight, weight])
    groups = np.concatenate([np.arange(rows), np.arange(rows)])
    with config_context(enable_metadata_routing=True), warnings.catch_warnings():
        scorer = make_scorer(_soft_log_loss, response_method="predict_proba", greater_is_better=False
                             ).set_score_request(true_sample_weight=True, true_prob=True)
        # scikit-learn 1.8+ deprecates `penalty` (removed in 1.10); alpaca_eval fits with it
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegressionCV(cv=GroupKFold(n_splits=GLM_FOLDS), scoring=scorer, random_state=123,
                                     dual=False, penalty="l1", solver="liblinear", fit_intercept=False)
        model.set_fit_request(sample_weight=True)
        model.fit(x, y, sample_weight=true_prob * true_weight, groups=groups, true_sample_weight=true_weight,
                  true_prob=true_prob)
    predicted = model.predict_proba(features(np.zeros(len(preference)), difficulty, ones))[:, 1]
    return {"length_controlled_winrate": float(predicted.mean()), "lc_standard_error": _sem(predicted)}


def _soft_log_loss(y, y_pred, true_prob, true_sample_weight=None):
    """alpaca_eval's `logloss_continuous`: the log loss against the soft label each row stands for."""
    target = np.where(y == 1, true_prob, 1 - true_prob)
    y_pred = np.clip(y_pred, 1e-15, 1 - 1e-15)
    losses = target * np.log(y_pred) + (1 - target) * np.log(1 - y_pred)
    if true_sample_weight is not None:
        losses = losses * true_sample_weight
    return -np.mean(losses)
