"""End-to-end jobs behind the CLI: fit (split, extract, train, score, save), fine-tune, compare,
evaluate, predict.

A job takes one request (:mod:`.requests`): the data, how it is split, which featurizer, which
recipe, where the result goes. The data is split once, before any extraction; items that cannot
be read are then left out of that split (no reshuffle). One file per kind of job: :mod:`.fit`,
:mod:`.extract`, :mod:`.train` (fine-tune, train a source, compare), :mod:`.use` (evaluate,
predict).
"""

from transfuse.workflow.extract import extract_source
from transfuse.workflow.fit import AUTO_SCORES, auto_layers, choose_source, fit, fit_source
from transfuse.workflow.held_out import HeldOut
from transfuse.workflow.requests import (
    AUTO,
    FeaturizerSpec,
    FitRequest,
    FitResult,
    OutputSpec,
    SplitSpec,
    command_line,
    default_out_dir,
)
from transfuse.workflow.train import compare_source, finetune, metric_summary, source_backbone, train_source
from transfuse.workflow.use import evaluate_dir, predict_arrays, predict_paths, trained_on

__all__ = ["AUTO", "AUTO_SCORES", "FeaturizerSpec", "FitRequest", "FitResult", "HeldOut", "OutputSpec", "SplitSpec",
           "auto_layers", "choose_source", "command_line", "compare_source", "default_out_dir", "evaluate_dir",
           "extract_source", "finetune", "fit", "fit_source", "metric_summary", "predict_arrays", "predict_paths",
           "source_backbone", "train_source", "trained_on"]
