"""ONNX for a fine-tuned network, exported by torch and merged in: for images, pixels normalised, the
network, softmax (with test-time augmentation the mean over the image and its mirror image); for
texts, token ids and mask in (the tokenizer written beside, as for a text probe), softmax out; for
sequences, one item's frames in, softmax out."""

from __future__ import annotations

from transfuse.errors import DataError
from transfuse.export.graph import Graph


def finetuned(graph: Graph, part, x: str | None) -> str:
    import torch

    if part.modality == "text":
        return _text(graph, part)
    if part.modality == "sequence":
        return _sequence(graph, part)
    if part.modality != "image":
        raise DataError(f"fine-tuned {part.modality} networks do not export yet; image, text and sequence ones do")
    spec, size = part.task.backbone.input_spec, int(part.task.image_size)

    class Probabilities(torch.nn.Module):
        def __init__(self, network, mean, std, tta: bool) -> None:
            super().__init__()
            self.network, self.tta = network, tta
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        def forward(self, pixels):
            z = (pixels - self.mean) / self.std
            p = torch.softmax(self.network(z).float(), 1)
            return (p + torch.softmax(self.network(torch.flip(z, dims=[3])).float(), 1)) / 2 if self.tta else p

    wrapped = Probabilities(part.model.cpu().eval(), spec.mean, spec.std, part.tta).eval()
    pixels = graph.image_input(size, 1.0, spec.interpolation)  # the whole image resized, as fine-tuning read it
    return graph.merge_torch(wrapped, (torch.zeros(1, 3, size, size),), "finetuned/", {"pixels": pixels},
                             ["probabilities"], {"pixels": {0: "batch"}, "probabilities": {0: "batch"}})["probabilities"]


EXPORTS = (("finetuned", finetuned),)


def _text(graph: Graph, part) -> str:
    import torch

    from transfuse.export.featurizer import TOKENS, tokenizer_files

    class Probabilities(torch.nn.Module):
        def __init__(self, network) -> None:
            super().__init__()
            self.network = network

        def forward(self, input_ids, attention_mask):
            return torch.softmax(self.network({"input_ids": input_ids, "attention_mask": attention_mask}).float(), 1)

    backbone = part.task.backbone
    ids, mask = tokenizer_files(graph, backbone)
    sample = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    axes = {name: {0: "batch", 1: "tokens"} for name in TOKENS} | {"probabilities": {0: "batch"}}
    return graph.merge_torch(Probabilities(part.model.cpu().eval()), sample, "finetuned/",
                             {"input_ids": ids, "attention_mask": mask}, ["probabilities"], axes)["probabilities"]


def _sequence(graph: Graph, part) -> str:
    import torch

    class Probabilities(torch.nn.Module):
        def __init__(self, network) -> None:
            super().__init__()
            self.network = network

        def forward(self, frames):
            return torch.softmax(self.network({"frames": frames}).float(), 1)

    width = part.task.backbone.input_spec.width
    frames = graph.sequence_input(width)
    axes = {"frames": {1: "frames"}, "probabilities": {0: "batch"}}
    return graph.merge_torch(Probabilities(part.model.cpu().eval()), (torch.zeros(1, 20, width),), "finetuned/",
                             {"frames": frames}, ["probabilities"], axes)["probabilities"]
