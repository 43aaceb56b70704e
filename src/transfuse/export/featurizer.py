"""ONNX for the feature extractor: each backbone's tap network (exported by torch, as the ONNX
engine does) merged into the graph under its own name, each tap pooled by ONNX operators, the
blocks side by side in the saved column order.

Images: the graph takes ``pixels``, float32 ``(N, 3, S, S)`` in [0, 1], the image after
transfuse's resize and centre crop (documented in the metadata); the backbone's mean and std are
applied inside. Torch image backbones whose taps are pooled one by one (convolutional maps, vision
transformer tokens after their class token, vectors).

Texts: the graph takes ``input_ids`` and ``attention_mask`` (int64, ``(N, T)``), one window per
text as transfuse builds it (the tokens without specials, cut to the window, the special ids put
around, right-padded); the tokenizer is written beside (``model.tokenizer.json``) and the special and
pad ids go into the metadata. Models that chunk long texts are refused (the graph reads one window).

Audio: the graph takes ``waveform``, float32 ``(1, S)``: one clip of any length, mono, at the
encoder's sample rate (in the metadata); every frame of the clip is pooled over time (mean and
standard deviation by default). The frozen speech-embedding encoder is an ONNX graph already and is
merged as it is, behind a zero-padding to its window.

Sequences: the graph takes ``frames``, float32 ``(1, T, W)``: one item's frames (a ``.npy`` array),
normalised per value inside the graph as the recurrent network was trained."""

from __future__ import annotations

import json

import numpy as np

from transfuse.errors import DataError
from transfuse.export.graph import Graph
from transfuse.taps import GEM_P, check_pooling

TOKENS = ("input_ids", "attention_mask")


def pool(graph: Graph, x: str, rank: int, pooling: str, hint: str, prefix: int = 0) -> str:
    """A tap pooled to ``(N, D)`` as transfuse pools it: ``(N, C, H, W)`` maps over space, ``(N, T, D)``
    token sequences over the tokens after the ``prefix`` ones (``cls``: token 0), ``avgmax`` both side
    by side; ``(N, D)`` passes through."""
    if rank == 2:
        return x
    if pooling == "avgmax":
        return graph.op("Concat", [pool(graph, x, rank, p, hint, prefix) for p in ("avg", "max")], hint, axis=1)
    if rank == 3:
        if pooling == "last":  # a recurrent network's state after the whole item
            return graph.op("Gather", [x, graph.const(-1, "last", np.int64)], hint, axis=1)
        if pooling == "meanstd":  # audio frames: mean and (population) standard deviation over time
            mean = graph.reduce("ReduceMean", x, [1], hint, keepdims=1)
            spread = graph.op("Sub", [x, mean], hint)
            var = graph.reduce("ReduceMean", graph.op("Mul", [spread, spread], hint), [1], hint)
            flat = graph.op("Squeeze", [mean, graph.ints([1])], hint)
            return graph.op("Concat", [flat, graph.op("Sqrt", [var], hint)], hint, axis=1)
        if pooling == "cls":
            return graph.op("Gather", [x, graph.const(0, "first", np.int64)], hint, axis=1)
        if prefix:  # the class (and register) tokens are not part of the average
            x = graph.op("Slice", [x, graph.ints([prefix]), graph.ints([2**62]), graph.ints([1])], hint)
        if pooling == "max":
            return graph.reduce("ReduceMax", x, [1], hint)
        if pooling == "gem":
            return _gem(graph, graph.reduce("ReduceMean", _cubed(graph, x, hint), [1], hint), hint)
        return graph.reduce("ReduceMean", x, [1], hint)
    if pooling == "max":
        return graph.op("Flatten", [graph.op("GlobalMaxPool", [x], hint)], hint, axis=1)
    if pooling == "gem":
        return graph.op("Flatten", [_gem(graph, graph.op("GlobalAveragePool", [_cubed(graph, x, hint)], hint), hint)],
                        hint, axis=1)
    return graph.op("Flatten", [graph.op("GlobalAveragePool", [x], hint)], hint, axis=1)


def _cubed(graph: Graph, x: str, hint: str) -> str:
    return graph.op("Pow", [graph.op("Clip", [x, graph.const(1e-6)], hint), graph.const(GEM_P)], hint)


def _gem(graph: Graph, mean: str, hint: str) -> str:
    return graph.op("Pow", [mean, graph.const(1.0 / GEM_P)], hint)


def pool_tokens(graph: Graph, h: str, mask: str, pooling: str, hint: str) -> str:
    """``(N, T, D)`` token states pooled to ``(N, D)`` under the padding mask ``(N, T, 1)`` float
    (``avgmax``: ``(N, 2D)``), as transfuse pools one window."""
    if pooling == "avgmax":
        return graph.op("Concat", [pool_tokens(graph, h, mask, "avg", hint), pool_tokens(graph, h, mask, "max", hint)],
                        hint, axis=1)
    if pooling == "cls":
        return graph.op("Gather", [h, graph.const(0, "first", np.int64)], hint, axis=1)
    if pooling == "max":
        real = graph.op("Cast", [mask], hint, to=9)  # bool
        masked = graph.op("Where", [real, h, graph.const(-np.inf)], hint)
        return graph.reduce("ReduceMax", masked, [1], hint)
    total = graph.reduce("ReduceSum", graph.op("Mul", [h, mask], hint), [1], hint)
    return graph.op("Div", [total, graph.reduce("ReduceSum", mask, [1], hint)], hint)


def _taps(graph: Graph, backbone, taps: list[str], sample: tuple, prefix: str, inputs: list[str]) -> dict[str, str]:
    """The backbone's tap network (as the ONNX engine exports it: every tap an output, its batch and
    sequence axes dynamic) merged under ``prefix``, fed by ``inputs`` in its input order."""
    from transfuse.engines.onnx import tap_network

    module, names, axes = tap_network(backbone, taps)
    return graph.merge_torch(module, sample, prefix, dict(zip(names, inputs)), taps, axes)


def tokenizer_files(graph: Graph, backbone) -> tuple[str, str]:
    """The token inputs of a text encoder's graph (``input_ids``, ``attention_mask``); its tokenizer
    goes beside the graph and the window, special and pad ids into the metadata (one per graph)."""
    if not hasattr(getattr(backbone, "tokenizer", None), "backend_tokenizer"):
        raise DataError(f"{backbone.name} cannot be exported: it is not a transformer with a fast tokenizer")
    from tokenizers import Tokenizer

    clean = Tokenizer.from_str(backbone.tokenizer.backend_tokenizer.to_str())
    clean.no_padding()  # the encoder's tokenizer may carry the padding of its last batch
    clean.no_truncation()
    text = clean.to_str()
    if graph.files.get("tokenizer.json", text) != text:
        raise DataError("the parts of this model read texts with different tokenizers; one graph takes one")
    before, after = backbone.specials
    graph.metadata.update({"input": ",".join(TOKENS), "max_tokens": str(backbone.input_spec.max_tokens),
                           "specials": json.dumps([before, after]), "pad_id": str(backbone.tokenizer.pad_token_id),
                           "tokenizer": "tokenizer.json"})
    graph.files["tokenizer.json"] = text
    if TOKENS[0] not in {i.name for i in graph.inputs}:
        for name in TOKENS:
            graph.input(name, ["batch", "tokens"], np.int64)
    return TOKENS


def _text(graph: Graph, part, name: str, pooling: str) -> str:
    import torch

    from transfuse.backbones import create_backbone

    if part.long_text != "truncate":
        raise DataError("this model averages the windows of long texts (long_text='chunk'); the exported graph "
                        "reads one window per text, so it would not predict the same: fit with long_text='truncate'")
    taps = list(part.slices_)
    backbone = create_backbone(name, weights=part.weights)
    ids, mask = tokenizer_files(graph, backbone)
    sample = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    outputs = _taps(graph, backbone, taps, sample, f"{name}/", [ids, mask])
    mask3 = graph.op("Unsqueeze", [graph.op("Cast", [mask], "mask", to=1), graph.ints([2])], "mask")
    blocks = [pool_tokens(graph, outputs[tap], mask3, pooling, f"{tap}_pool") for tap in taps]
    return blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, "features", axis=1)


def _pad_samples(graph: Graph, wave: str, samples: int) -> str:
    """``(1, S)`` zero-padded at the end to ``samples`` when shorter, as a batch pads it."""
    zeros = graph.const(np.zeros((1, samples)), "pad")
    length = graph.op("Max", [graph.op("Shape", [wave], "length", start=1, end=2), graph.ints([samples])], "length")
    return graph.op("Slice", [graph.op("Concat", [wave, zeros], "padded", axis=1), graph.ints([0]), length,
                              graph.ints([1])], "padded")


def _audio(graph: Graph, part, name: str, pooling: str) -> str:
    import onnx
    import torch

    from transfuse.backbones import create_backbone
    from transfuse.backbones.nets.audio import ClipTaps, OnnxSpeechEmbedding

    taps = list(part.slices_)
    backbone = create_backbone(name, weights=part.weights)
    spec = backbone.input_spec
    wave = graph.audio_input(spec.sample_rate)
    model = backbone.model
    if isinstance(model, OnnxSpeechEmbedding):  # its own graph: (1, S >= window) -> (1, T, 1, 96)
        padded = _pad_samples(graph, wave, spec.min_samples)
        outputs = graph.merge(onnx.load(model.path), f"{name}/", {model.input_name: padded})
        frames = {"features": graph.op("Squeeze", [outputs[model.output_name], graph.ints([2])], "frames")}
    elif hasattr(model, "clip"):
        axes = {"waveform": {1: "samples"}, **{tap: {1: "frames"} for tap in taps}}
        frames = graph.merge_torch(ClipTaps(model, taps), (torch.zeros(1, spec.sample_rate),), f"{name}/",
                                   {"waveform": wave}, taps, axes)
    else:
        raise DataError(f"{name} cannot be exported: its network does not say how to read one clip")
    blocks = [pool(graph, frames[tap], 3, pooling, f"{tap}_pool") for tap in taps]
    return blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, "features", axis=1)


def _sequence(graph: Graph, part, name: str, pooling: str) -> str:
    import torch

    from transfuse.backbones import create_backbone
    from transfuse.backbones.nets.rnn import SequenceTaps

    taps = list(part.slices_)
    backbone = create_backbone(name, weights=part.weights)
    width = backbone.input_spec.width
    frames = graph.sequence_input(width)
    axes = {"frames": {1: "frames"}, **{tap: {1: "frames"} for tap in taps}}
    states = graph.merge_torch(SequenceTaps(backbone.model, taps), (torch.zeros(1, 20, width),), f"{name}/",
                               {"frames": frames}, taps, axes)
    blocks = [pool(graph, states[tap], 3, pooling, f"{tap}_pool") for tap in taps]
    return blocks[0] if len(blocks) == 1 else graph.op("Concat", blocks, "features", axis=1)


def extractor(graph: Graph, part, x: str | None) -> str:
    import torch

    from transfuse.backbones import create_backbone, get_spec
    from transfuse.backbones.nets.base import Backbone
    from transfuse.featurizers.extractor import backbone_list

    names = backbone_list(part.backbone)
    specs = [get_spec(name) for name in names]
    kinds = {s.modality for s in specs}
    if kinds == {"text"} and len(names) == 1 and specs[0].network == "torch":
        return _text(graph, part, names[0], check_pooling(part.pooling, "text"))
    frozen = [s.name for s in specs if s.modality == "text" and s.network != "torch"]
    if frozen:
        raise DataError(f"{', '.join(frozen)} cannot be exported: a frozen encoder computed in "
                        f"{specs[names.index(frozen[0])].network}, not a network a graph can hold; fit with a "
                        f"transformer encoder (minilm_l6, mpnet_base, hf:...) to export")
    if kinds == {"audio"} and len(names) == 1:
        return _audio(graph, part, names[0], check_pooling(part.pooling, "audio"))
    if kinds == {"sequence"} and len(names) == 1:
        return _sequence(graph, part, names[0], check_pooling(part.pooling, "sequence"))
    if kinds != {"image"}:
        raise DataError(f"export reads images, single transformer text encoders, single audio encoders and "
                        f"single recurrent sequence networks; "
                        f"{part.backbone} reads "
                        f"{', '.join(sorted(kinds))}")
    pooling = check_pooling(part.pooling, "image")
    sizes = {s.input_spec.size for s in specs}
    if len(sizes) > 1:
        raise DataError(f"the fused backbones take different image sizes ({sorted(sizes)}); one graph input "
                        f"cannot feed them all")
    size = sizes.pop()
    geometry = {(s.input_spec.crop_pct, s.input_spec.interpolation) for s in specs}
    if len(geometry) > 1:
        raise DataError(f"the fused backbones crop or resize images differently ({sorted(geometry)}); one graph "
                        f"input cannot feed them all")
    pixels = graph.image_input(size, specs[0].input_spec.crop_pct, specs[0].input_spec.interpolation)
    blocks = {}
    for name, spec in zip(names, specs):
        prefix = f"{name}:" if len(names) > 1 else ""
        taps = [k.removeprefix(prefix) for k in part.slices_ if k.startswith(prefix)]
        backbone = create_backbone(name, weights=part.weights)
        if spec.network != "torch" or type(backbone).pool_raw is not Backbone.pool_raw:
            raise DataError(f"{name} cannot be exported yet (a {spec.family} network that pools its taps its own "
                            f"way); torch image backbones pooled per tap can")
        mean = np.asarray(spec.input_spec.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(spec.input_spec.std, np.float32).reshape(1, 3, 1, 1)
        normalised = graph.affine(pixels, mean, std, f"{name}_normalise")
        outputs = _taps(graph, backbone, taps, (torch.zeros(1, 3, size, size),), f"{name}/", [normalised])
        shapes = {t.name: t.shape for t in spec.taps}
        for tap in taps:
            blocks[prefix + tap] = pool(graph, outputs[tap], len(shapes[tap]) + 1, pooling, f"{name}_{tap}_pool",
                                        backbone.num_prefix_tokens)
    ordered = [blocks[k] for k, _ in sorted(part.slices_.items(), key=lambda kv: kv[1].start)]
    return ordered[0] if len(ordered) == 1 else graph.op("Concat", ordered, "features", axis=1)


EXPORTS = (("extractor", extractor),)
