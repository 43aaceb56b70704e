"""An ensemble as a saved part: several whole models (probe pipelines, fine-tuned networks) read the
same items, and their class probabilities are averaged with fixed weights.

It persists like every part (``get_state``/``from_state``): each member's parts are stored with their
own protocol, under ``m<i>.<part name>.`` in the one weights file, and their kinds and meta in the
ensemble's meta, so a member kind added later is stored by the same code.
"""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from transfuse.errors import CorruptInputError, DataError
from transfuse.parts import json_ready, part_class
from transfuse.pipeline import model_classes, model_modality, pipeline_outputs


class EnsembleModel:
    """Weighted mean of the members' class probabilities (``predict_proba(items)``); every member must
    read the same kind of items and know the same classes (their column orders may differ).

    >>> EnsembleModel([probe, finetuned], weights=[0.5, 0.5]).predict(["shoe.png"])  # doctest: +SKIP
    array(['sneaker'], dtype='<U7')
    """

    kind = "ensemble"
    role = "model"

    def __init__(self, members: list, weights: list[float] | None = None, labels: list[str] | None = None) -> None:
        if len(members) < 2:
            raise DataError(f"an ensemble needs at least two members, got {len(members)}")
        kinds = {model_modality(m) for m in members}
        if len(kinds) > 1:
            raise DataError(f"the members of an ensemble read one kind of items; these read {', '.join(sorted(kinds))}")
        scoreless = [i for i, m in enumerate(members) if isinstance(m, Pipeline) and not hasattr(m, "predict_proba")]
        if scoreless:
            raise DataError(f"member {scoreless[0]}'s head ({members[scoreless[0]].steps[-1][1].kind}) gives no "
                            f"probabilities to average; use logreg, mlp or knn in an ensemble")
        classes = [sorted(str(c) for c in model_classes(m)) for m in members]
        if any(c != classes[0] for c in classes):
            raise DataError("the members of an ensemble must know the same classes")
        weights = [1.0 / len(members)] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or min(weights) < 0 or sum(weights) <= 0:
            raise DataError(f"give one non-negative weight per member (not all 0), got {weights}")
        self.members, self.weights = list(members), [w / sum(weights) for w in weights]
        self.labels = list(labels) if labels is not None else [f"member {i}" for i in range(len(members))]
        self.classes_ = np.asarray(classes[0])
        self.modality = kinds.pop()

    def scores(self, items: list, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """``(readable mask, probabilities of the readable items)``: an item is readable when every
        member can read it."""
        ok = np.ones(len(items), dtype=bool)
        each = []
        for member in self.members:
            good, proba = _member_scores(member, items)
            order = [list(map(str, model_classes(member))).index(c) for c in self.classes_]
            full = np.zeros((len(items), len(self.classes_)))
            full[good] = proba[:, order]
            ok &= good
            each.append(full)
        total = sum(w * p for w, p in zip(self.weights, each))
        return ok, total[ok]

    def predict_proba(self, items: list) -> np.ndarray:
        ok, proba = self.scores(items)
        if not ok.all():
            raise CorruptInputError.unreadable([p for p, good in zip(items, ok) if not good], len(items), cached=False)
        return proba

    def predict(self, items: list) -> np.ndarray:
        return self.classes_[self.predict_proba(items).argmax(1)]

    def configure(self, **settings) -> EnsembleModel:
        """Run-time settings (device, workers, cache, ...) for every member's first part."""
        for member in self.members:
            first = member.steps[0][1] if isinstance(member, Pipeline) else member
            first.configure(**settings)
        return self

    # -- the part protocol ----------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        arrays, members = {}, []
        for i, member in enumerate(self.members):
            parts = list(member.steps) if isinstance(member, Pipeline) else [("model", member)]
            entries = []
            for name, part in parts:
                state, meta = part.get_state()
                arrays.update({f"m{i}.{name}.{key}": value for key, value in state.items()})
                entries.append({"name": name, "kind": part.kind, "meta": json_ready(meta), "arrays": sorted(state)})
            members.append(entries)
        return arrays, {"members": members, "weights": self.weights, "labels": self.labels,
                        "classes": [str(c) for c in self.classes_]}

    @classmethod
    def from_state(cls, arrays: dict[str, np.ndarray], meta: dict) -> EnsembleModel:
        members = []
        for i, entries in enumerate(meta["members"]):
            parts = []
            for entry in entries:
                prefix = f"m{i}.{entry['name']}."
                own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
                missing = sorted(set(entry["arrays"]) - set(own))
                if missing:
                    raise ValueError(f"member {i} lacks the arrays {', '.join(missing)}")
                parts.append((entry["name"], part_class(entry["kind"]).from_state(own, entry["meta"])))
            members.append(parts[0][1] if len(parts) == 1 else Pipeline(parts))
        return cls(members, meta["weights"], meta.get("labels"))


def _member_scores(member, items: list) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(member, Pipeline):
        ok, _, proba = pipeline_outputs(member, items, on_error="skip")
        return ok, proba
    return member.scores(items)


PARTS = (EnsembleModel,)
