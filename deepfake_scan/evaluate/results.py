"""The numbers of an evaluation, from the scored rows: plain numpy, no Ray, no plotting.

Metrics are ``deepfake_scan.metrics.binary_metrics`` (scikit-learn's ranking metrics, the model's
threshold) plus the share of images landing in the review band. A *group* is one ``--real`` or
``--fake`` source (and each of its sub-folders, when it has several); a group holds one class, so
it is measured against every image of the other class, as CNNDetection reports one generator's
fakes against the common reals.
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter
from dataclasses import dataclass

import numpy as np

from deepfake_scan.metrics import binary_metrics

OVERALL = "overall"
CLASS_NAMES = ("real", "fake")


@dataclass
class Scored:
    """Every record of an evaluation: (N,) columns, ``scores`` (N, views), ``adv`` (N, attacks)."""

    uri: np.ndarray
    source: np.ndarray
    label: np.ndarray
    error: np.ndarray
    scores: np.ndarray
    adv: np.ndarray
    views: tuple[str, ...]
    attack_columns: tuple[str, ...]

    @property
    def ok(self) -> np.ndarray:
        return np.array([not e for e in self.error], dtype=bool)

    @property
    def attacked(self) -> np.ndarray:
        if not self.adv.shape[1]:
            return np.zeros(len(self.uri), dtype=bool)
        return self.ok & ~np.isnan(self.adv).any(axis=1)


def detection_metrics(y, scores, threshold: float, band: tuple[float, float]) -> dict:
    """``binary_metrics`` plus ``review_rate`` (share of scores in [low, high)) and ``acc_decided``
    (accuracy of the images left outside the band: what reaches nobody's review queue)."""
    y, s = np.asarray(y, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    m = binary_metrics(y, s, threshold)
    lo, hi = band
    inside = (s >= lo) & (s < hi)
    m["review_rate"] = float(inside.mean()) if len(s) else float("nan")
    decided = ~inside
    right = (s >= threshold) == y.astype(bool)
    m["acc_decided"] = float(right[decided].mean()) if decided.any() else float("nan")
    return m


def group_of(uri: str, source: str) -> str | None:
    """The sub-folder of ``source`` holding ``uri`` (``SOURCE/sub``), or None at its top level."""
    base = source.rstrip("/")
    path = uri.split("#", 1)[0]
    if not path.startswith(base + "/"):
        return None
    rest = path[len(base) + 1 :]
    return posixpath.join(base, rest.split("/", 1)[0]) if "/" in rest else None


def groups(data: Scored) -> dict[str, np.ndarray]:
    """Group name -> mask of its records *and* every record of the other class."""
    out: dict[str, np.ndarray] = {OVERALL: np.ones(len(data.uri), dtype=bool)}
    first = {}  # sources in order: real ones first, then fake ones
    for src, cls in zip(data.source, data.label, strict=True):
        first.setdefault(src, int(cls))
    for src in sorted(first, key=lambda s: first[s]):
        mine = data.source == src
        cls = int(data.label[mine][0])
        other = data.label != cls
        out[src] = mine | other
        subs = np.array([group_of(u, src) for u in data.uri[mine]], dtype=object)
        names = [g for g in dict.fromkeys(subs) if g is not None]
        if len(names) > 1:  # one sub-folder would only repeat the source's own row
            for g in names:
                sub = np.zeros(len(data.uri), dtype=bool)
                sub[np.flatnonzero(mine)[subs == g]] = True
                out[g] = sub | other
    return out


def metric_table(data: Scored, threshold: float, band: tuple[float, float]) -> dict:
    """``{view: {group: metrics}}`` over the readable records."""
    masks = {name: mask & data.ok for name, mask in groups(data).items()}
    return {
        view: {
            name: detection_metrics(data.label[m], data.scores[m, i], threshold, band)
            for name, m in masks.items()
        }
        for i, view in enumerate(data.views)
    }


def robustness(table: dict) -> list[dict]:
    """One row per view, overall: its metrics and the change against the clean view."""
    clean = table[next(iter(table))][OVERALL]
    rows = []
    for view, by_group in table.items():
        m = by_group[OVERALL]
        rows.append(
            {
                "view": view,
                **m,
                "auc_change": _diff(m["auc"], clean["auc"]),
                "acc_change": _diff(m["acc"], clean["acc"]),
            }
        )
    return rows


def adversarial(data: Scored, threshold: float, band: tuple[float, float]) -> list[dict]:
    """One row per attack and epsilon, over the attacked fakes.

    ``turned_real``: fakes the model labelled fake or uncertain before the attack and ``real``
    after it; ``turned_real_rate`` is their share of the fakes it did not call real before.
    """
    attacked = data.attacked
    before = data.scores[attacked, 0].astype(np.float64)
    not_real_before = _labels(before, threshold, band) != "real"
    rows = []
    for j, column in enumerate(data.attack_columns):
        after = data.adv[attacked, j].astype(np.float64)
        turned = not_real_before & (_labels(after, threshold, band) == "real")
        attack, eps = column.split("@", 1)
        rows.append(
            {
                "attack": attack,
                "epsilon": eps,
                "n": int(attacked.sum()),
                "fake_acc_before": _mean(before >= threshold),
                "fake_acc_after": _mean(after >= threshold),
                "turned_real": int(turned.sum()),
                "turned_real_rate": _ratio(turned.sum(), not_real_before.sum()),
                "mean_score_before": _mean(before),
                "mean_score_after": _mean(after),
            }
        )
    return rows


def _labels(s: np.ndarray, threshold: float, band: tuple[float, float]) -> np.ndarray:
    lo, hi = band
    out = np.where(s >= threshold, "fake", "real").astype(object)
    out[(s >= lo) & (s < hi)] = "uncertain"
    return out


def worst_mistakes(data: Scored, threshold: float, n: int) -> dict[str, list[dict]]:
    """The clean view's most confident errors: fakes scored lowest, reals scored highest."""
    ok, s = data.ok, data.scores[:, 0]
    out = {}
    for cls, name, sign in ((1, "missed_fakes", 1.0), (0, "false_alarms", -1.0)):
        wrong = np.flatnonzero(ok & (data.label == cls) & ((s >= threshold) != bool(cls)))
        order = wrong[np.argsort(sign * s[wrong], kind="stable")][:n]
        out[name] = [
            {"uri": str(data.uri[i]), "source": str(data.source[i]), "score": float(s[i])}
            for i in order
        ]
    return out


def counts(data: Scored) -> dict:
    """Records per class, unreadable records by error code."""
    ok = data.ok
    errors = Counter(str(e).split(":", 1)[0] for e in data.error[~ok])
    return {
        "records": int(len(data.uri)),
        "scored": {c: int((ok & (data.label == i)).sum()) for i, c in enumerate(CLASS_NAMES)},
        "unreadable": int((~ok).sum()),
        "errors": dict(sorted(errors.items())),
        "attacked_fakes": int(data.attacked.sum()),
    }


def compare(current: dict, baseline: dict) -> dict:
    """Differences (this model minus the baseline's summary.json) in the robustness and
    adversarial tables, matched by view and by attack."""
    base_views = {r["view"]: r for r in baseline.get("robustness", [])}
    base_attacks = {(r["attack"], r["epsilon"]): r for r in baseline.get("adversarial", [])}
    keys = ("auc", "ap", "acc", "real_acc", "fake_acc", "eer")
    rob = [
        {"view": r["view"], **{k: _diff(r[k], base_views[r["view"]].get(k)) for k in keys}}
        for r in current["robustness"]
        if r["view"] in base_views
    ]
    adv_keys = ("fake_acc_after", "turned_real_rate", "mean_score_after")
    adv = [
        {
            "attack": r["attack"],
            "epsilon": r["epsilon"],
            **{k: _diff(r[k], base_attacks[(r["attack"], r["epsilon"])].get(k)) for k in adv_keys},
        }
        for r in current["adversarial"]
        if (r["attack"], r["epsilon"]) in base_attacks
    ]
    model = baseline.get("model", {})
    return {"baseline": model.get("model_id", ""), "robustness": rob, "adversarial": adv}


def _diff(a, b) -> float:
    if a is None or b is None:
        return float("nan")
    return float(a) - float(b)


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if len(a) else float("nan")


def _ratio(a, b) -> float:
    return float(a) / float(b) if b else float("nan")


def finite_or_none(value):
    """JSON has no NaN: undefined metrics (one class only, nothing attacked) become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value
