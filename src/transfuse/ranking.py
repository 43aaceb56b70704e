"""Ranking sources before training: every backbone x tap (and each backbone's taps fused) scored by
transferability scores on the labelled items, from features that go through the cache.

A candidate is one backbone with one tap, all its requested taps concatenated (``fused``), a
fitted featurizer (``tfidf``: the no-transfer baseline can come out on top), or, once the others are
ranked, the best candidates of the two best backbones fused (``"a,b"``). Each score is computed
on all items and on ``resamples`` seeded stratified 80 % subsamples (their spread says how much to
trust a difference); candidates are ranked under each score (1 = best) and by the mean of those
ranks. Scores that read the source head's probabilities (LEEP, NCE) use a backbone's ``logits``
tap where it has one. Reducing dimensions before scoring happens only when asked (``reduce``), or
for sparse features (TF-IDF), and is logged either way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import softmax
from scipy.stats import rankdata

from transfuse.backbones import get_spec
from transfuse.errors import DataError
from transfuse.extract import extract_features
from transfuse.featurizers import fitted_featurizers, make_featurizer
from transfuse.transferability import get_score, scores

log = logging.getLogger(__name__)
DEFAULT_SCORES = ("logme", "knn")  # see AUTO_SCORES in workflow.py and docs/benchmarks.md
SPARSE_DIMS = 256  # TF-IDF is reduced to this many dimensions (truncated SVD) before scoring
FUSED = "fused"


@dataclass
class Candidate:
    """One thing to rank and what scoring it found."""

    backbone: str
    layer: str
    X: np.ndarray = field(repr=False)
    probs: np.ndarray | None = field(default=None, repr=False)  # the source head's probabilities, if any
    engine: str | None = None  # "runtime precision" that computed the features (None: fitted featurizer)
    seconds: float = 0.0  # extraction (shared by a backbone's candidates) plus scoring
    scores: dict[str, float] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)
    ranks: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict:
        return {"backbone": self.backbone, "layer": self.layer, "dim": int(self.X.shape[1]), "scores": self.scores,
                "spread": self.spread, "ranks": self.ranks, "rank": self.ranks.get("combined"),
                "engine": self.engine, "seconds": round(self.seconds, 3)}


def default_candidates(modality: str) -> list[str]:
    """What is ranked when no backbone is named: the fitted featurizers (the no-transfer baselines) and
    every declared backbone of ``modality`` whose weights are on this machine (test models left out),
    smallest first."""
    from transfuse.backbones import list_backbones

    specs = [s for s in list_backbones() if s.modality == modality and s.family != "test" and s.network != "keras"
             and s.weights.available()]  # an architecture without weights is never available
    found = [name for name, cls in fitted_featurizers().items() if cls.modality == modality]  # cheapest first
    found += [s.name for s in sorted(specs, key=lambda s: (s.params or 0, s.name))]
    if not found:
        raise DataError(f"no {modality} backbone has its weights on this machine; see `transfuse backbones`")
    return found


def score_names(chosen: str | list[str] | None) -> list[str]:
    """``"logme,knn"``, ``"all"`` or a list -> validated score names (default :data:`DEFAULT_SCORES`)."""
    if chosen is None:
        return list(DEFAULT_SCORES)
    names = chosen.split(",") if isinstance(chosen, str) else list(chosen)
    names = [n.strip() for n in names if n.strip()]
    if names == ["all"]:
        return sorted(scores())
    for name in names:
        get_score(name)
    return names


def fuse_blocks(blocks: list[np.ndarray]) -> np.ndarray:
    """The ``fused`` candidate: the blocks concatenated as the networks give them. The scores are made
    for a network's own features; standardising every column first (each block weighted by
    1/sqrt(its width)) was measured on the image harness to drop LogME's mean weighted tau from 0.62
    to 0.28, as it inflates near-constant columns (docs/benchmarks.md)."""
    return np.hstack(blocks)


def _reduce(X, dims: int, seed: int, why: str, name: str) -> np.ndarray:
    from sklearn.decomposition import PCA, TruncatedSVD

    dims = min(dims, X.shape[1], X.shape[0] - 1)
    sparse = not isinstance(X, np.ndarray)
    log.info("%s: %s to %d dimensions before scoring (%s)", name, "truncated SVD" if sparse else "PCA", dims, why)
    reducer = TruncatedSVD(dims, random_state=seed) if sparse else PCA(dims, random_state=seed)
    return np.asarray(reducer.fit_transform(X), dtype=np.float64)


def _candidates(items: list[str], modality: str, backbone: str, layers: list[str] | None, fused: bool,
                need_probs: bool, reduce: int | None, seed: int, extract: dict) -> list[Candidate]:
    """The candidates of one backbone (or fitted featurizer), with their features."""
    start = time.perf_counter()
    if backbone in fitted_featurizers():
        X = make_featurizer(backbone, modality).fit_transform(items)
        X = _reduce(X, reduce or SPARSE_DIMS, seed, "sparse features", backbone) if not isinstance(X, np.ndarray) \
            else np.asarray(X, dtype=np.float64)
        return [Candidate(backbone, backbone, X, seconds=time.perf_counter() - start)]
    spec = get_spec(backbone)
    taps = spec.check_taps(layers) if layers else spec.tap_names
    wanted = list(dict.fromkeys([*taps, *(["logits"] if need_probs and "logits" in spec.tap_names else [])]))
    features = extract_features(items, backbone=backbone, layers=wanted, **extract)
    if features.failed:
        raise DataError(f"{len(features.failed)} items could not be read by {backbone}; rank needs every item "
                        f"(remove them, or rank with --skip-bad dropped items first)")
    probs = softmax(features.X[:, features.slices["logits"]].astype(np.float64), axis=1) if "logits" in wanted and \
        need_probs else None
    blocks = {tap: features.X[:, features.slices[tap]].astype(np.float64) for tap in taps}
    if fused and len(taps) > 1:
        blocks[FUSED] = fuse_blocks(list(blocks.values()))
    seconds = (time.perf_counter() - start) / len(blocks)
    engine = f"{features.engine.runtime} {features.engine.precision}" if features.engine else None
    out = []
    for tap, X in blocks.items():
        if reduce and X.shape[1] > reduce:
            X = _reduce(X, reduce, seed, "--reduce", f"{backbone}:{tap}")
        out.append(Candidate(backbone, tap, X, probs=probs, engine=engine, seconds=seconds))
    return out


def _resamples(y: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """Seeded stratified subsamples of 80 % of each class (at least two items per class)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        keep = [rng.choice(idx, max(2, int(round(0.8 * len(idx)))), replace=False)
                for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
        out.append(np.sort(np.concatenate(keep)))
    return out


def _ranks(values: list[float | None]) -> list[float | None]:
    """1 = highest; ties share their mean rank; missing values get no rank."""
    present = [i for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    out: list[float | None] = [None] * len(values)
    for i, r in zip(present, rankdata([-values[i] for i in present])):
        out[i] = float(r)
    return out


def _score(candidate: Candidate, names: list[str], y: np.ndarray, subsets: list[np.ndarray]) -> None:
    start = time.perf_counter()
    for name in names:
        spec = get_score(name)
        values = candidate.probs if spec.needs == "source_probs" else candidate.X
        if values is None:
            continue
        candidate.scores[name] = float(spec.fn(values, y))
        if subsets:
            candidate.spread[name] = float(np.std([spec.fn(values[s], y[s]) for s in subsets]))
    candidate.seconds += time.perf_counter() - start


def _assign_ranks(candidates: list[Candidate], names: list[str], warn: bool = True) -> None:
    """Ranks under each score, and the combined rank (their mean); candidates sorted by it."""
    for name in names:
        column = [c.scores.get(name) for c in candidates]
        present = [v for v in column if v is not None]
        if warn and len(present) > 1 and np.ptp(present) <= 1e-9 * max(1.0, abs(present[0])):
            log.warning("score %s gives every candidate the same value (%.4g): it cannot tell them apart here",
                        name, present[0])
        for candidate, r in zip(candidates, _ranks(column)):
            candidate.ranks.pop(name, None)
            if r is not None:
                candidate.ranks[name] = r
    for candidate in candidates:
        own = [candidate.ranks[n] for n in names if n in candidate.ranks]
        candidate.ranks["combined"] = float(np.mean(own)) if own else float("inf")
    candidates.sort(key=lambda c: (c.ranks["combined"], c.backbone, c.layer))


def _top_pair(candidates: list[Candidate]) -> Candidate | None:
    """The best candidate of each of the two best-ranked backbones, fused (None with fewer than two)."""
    best: dict[str, Candidate] = {}
    for c in candidates:  # sorted best first; fitted featurizers are no transfer: not fused here
        if c.backbone not in fitted_featurizers() and "," not in c.backbone:
            best.setdefault(c.backbone, c)
    if len(best) < 2:
        return None
    a, b = list(best.values())[:2]
    engine = a.engine if a.engine == b.engine else None
    return Candidate(f"{a.backbone},{b.backbone}", f"{a.backbone}:{a.layer},{b.backbone}:{b.layer}",
                     fuse_blocks([a.X, b.X]), engine=engine, seconds=a.seconds + b.seconds)


def rank(items: list[str], labels: list[str], backbones: list[str], *, layers: list[str] | None = None,
         score: str | list[str] | None = None, fused: bool = True, fuse_top: bool = True, resamples: int = 5,
         reduce: int | None = None, seed: int = 0, budget: float | None = None, **extract) -> list[dict]:
    """Rank ``backbones`` (and their taps) for the labelled ``items``; records sorted by combined rank.
    With ``fused`` each backbone's taps together are a candidate; with ``fuse_top`` so is the best
    candidate of the two best backbones fused (backbone ``"a,b"``, layer ``"a:tap,b:tap"``).

    ``extract`` goes to :func:`~transfuse.extract.extract_features` (pooling, weights, cache, runtime,
    precision, batch_size, num_workers, progress, long_text). With ``budget`` (seconds) no further
    backbone is started once that much time has passed (the first always runs).

    >>> rank(paths, labels, ["efficientnet_lite0", "dinov2_vits14"], score="logme,knn")[0]["backbone"]  # doctest: +SKIP
    'efficientnet_lite0'
    """
    names = score_names(score)
    if not backbones:
        raise DataError("give at least one backbone to rank")
    if resamples < 0:
        raise DataError(f"resamples must be at least 0, got {resamples}")
    y = np.unique(np.asarray(labels), return_inverse=True)[1]
    modalities = {(fitted_featurizers()[b].modality if b in fitted_featurizers() else get_spec(b).modality)
                  for b in backbones}
    if len(modalities) > 1:
        raise DataError(f"the candidates read different kinds of data ({', '.join(sorted(modalities))}); rank "
                        f"backbones of one modality")
    modality = modalities.pop()
    need_probs = any(get_score(n).needs == "source_probs" for n in names)
    candidates: list[Candidate] = []
    start = time.perf_counter()
    for backbone in backbones:
        if budget is not None and candidates and time.perf_counter() - start > budget:
            log.info("budget of %.0fs spent: %s not ranked", budget, ", ".join(backbones[backbones.index(backbone):]))
            break
        candidates += _candidates(items, modality, backbone, layers if backbone not in fitted_featurizers() else None,
                                  fused, need_probs, reduce, seed, extract)
    subsets = _resamples(y, resamples, seed)
    for candidate in candidates:
        _score(candidate, names, y, subsets)
    _assign_ranks(candidates, names)
    pair = _top_pair(candidates) if fuse_top else None
    if pair is not None:  # the two best backbones together: taken when that ranks higher still
        if reduce and pair.X.shape[1] > reduce:  # as wide as the others it is compared with
            pair.X = _reduce(pair.X, reduce, seed, "--reduce", pair.backbone)
        _score(pair, names, y, subsets)
        candidates.append(pair)
        _assign_ranks(candidates, names, warn=False)
    return [c.record() for c in candidates]
