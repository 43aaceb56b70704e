"""Feature extraction: all requested taps in one forward pass, batched, cached, resumable, here or
on a Ray cluster.

``extract_features`` (in :mod:`~transfuse.extract.features`) asks :mod:`transfuse.engines` which
engine runs the backbone, keeps what the feature cache already holds, and extracts the rest:
:mod:`~transfuse.extract.local` in this process, :mod:`~transfuse.extract.on_ray` on a cluster, both
through the one per-batch function of :mod:`~transfuse.extract.job`.
:mod:`~transfuse.extract.context` holds the settings a command gives every extraction below it
(deadline, cluster, Parquet input); :mod:`~transfuse.extract.parquet` the Parquet feature data set.
:class:`~transfuse.featurizers.extractor.FeatureExtractor` wraps it all as a pipeline step.
"""

from transfuse.extract.context import deadline, features_in, on_cluster
from transfuse.extract.features import Features, extract_features, open_cache, write_features
from transfuse.extract.job import FORMAT, Job, get_backbone

__all__ = ["FORMAT", "Features", "Job", "deadline", "extract_features", "features_in", "get_backbone",
           "on_cluster", "open_cache", "write_features"]
