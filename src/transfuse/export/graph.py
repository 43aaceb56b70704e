"""A small builder for one ONNX graph: named inputs, constants from numpy, operators, and whole
graphs (a backbone's exported tap network) merged in under a prefix. Every part's exporter adds its
operators here, so the pieces compose into one file."""

from __future__ import annotations

import itertools

import numpy as np

OPSET = 17  # what the backbones' tap networks are exported with; --opset may ask for more


class Graph:
    """Nodes, constants, inputs and a name counter; ``model(outputs)`` makes the ONNX model."""

    def __init__(self, opset: int = OPSET) -> None:
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.metadata: dict[str, str] = {}
        self.files: dict[str, str] = {}  # written beside the graph (a text model's tokenizer.json)
        self.image_inputs: dict[str, dict] = {}  # input name -> the preprocessing that makes its pixels
        self.output = "probabilities"  # a head that gives scores only (SVM, ridge) sets "scores"
        self._prefixes: set[str] = set()
        self._ids = itertools.count()

    def name(self, hint: str) -> str:
        return f"{hint}_{next(self._ids)}"

    def input(self, name: str, shape: list, dtype=np.float32) -> str:
        """A graph input: ``shape`` with names (``"batch"``) for the dynamic axes."""
        from onnx import helper

        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape))
        return name

    def image_input(self, size: int, crop_pct: float, interpolation: str) -> str:
        """The ``pixels`` input for images prepared this way: shared by every part that prepares them
        the same way (an ensemble's members may not: a fine-tuned network reads the whole resized
        image, a probe's backbone its centre crop), else a new input ``pixels_1``, ..."""
        wanted = {"image_size": int(size), "crop_pct": float(crop_pct), "interpolation": str(interpolation)}
        for name, prep in self.image_inputs.items():
            if prep == wanted:
                return name
        name = "pixels" if not self.image_inputs else f"pixels_{len(self.image_inputs)}"
        self.image_inputs[name] = wanted
        return self.input(name, ["batch", 3, int(size), int(size)])

    def audio_input(self, sample_rate: int) -> str:
        """The ``waveform`` input: one clip ``(1, S)``, mono at ``sample_rate``."""
        self.metadata.update({"input": "waveform", "sample_rate": str(sample_rate)})
        return self.input("waveform", [1, "samples"])

    def sequence_input(self, width: int) -> str:
        """The ``frames`` input: one item's frames ``(1, T, width)``."""
        self.metadata.update({"input": "frames", "width": str(width)})
        return self.input("frames", [1, "frames", int(width)])

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        """A constant (numpy array or number) as an initializer; its name."""
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.array(value, dtype=dtype, order="C"), name))  # 0-d stays 0-d
        return name

    def ints(self, values, hint: str = "axes") -> str:
        return self.const(np.asarray(values, np.int64), hint, np.int64)

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: int = 1, **attrs):
        """One operator; its output name (a list when ``outputs`` > 1)."""
        from onnx import helper

        names = [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(f"n_{op_type}"), **attrs))
        return names[0] if outputs == 1 else names

    def affine(self, x: str, mean: np.ndarray | None, scale: np.ndarray | None, hint: str) -> str:
        """``(x - mean) / scale`` column-wise (either may be None)."""
        if mean is not None and np.any(mean != 0):
            x = self.op("Sub", [x, self.const(mean, f"{hint}_mean")], hint)
        if scale is not None and np.any(scale != 1):
            x = self.op("Div", [x, self.const(scale, f"{hint}_scale")], hint)
        return x

    def columns(self, x: str, index: np.ndarray, hint: str) -> str:
        """The columns ``index`` of a ``(N, D)`` matrix, in that order (contiguous runs become Slice)."""
        index = np.asarray(index, np.int64)
        if len(index) and np.array_equal(index, np.arange(index[0], index[0] + len(index))):
            return self.op("Slice", [x, self.ints([index[0]]), self.ints([index[0] + len(index)]),
                                     self.ints([1])], hint)
        return self.op("Gather", [x, self.ints(index, f"{hint}_index")], hint, axis=1)

    def reduce(self, op_type: str, x: str, axes: list[int], hint: str, keepdims: int = 0) -> str:
        """``ReduceSum``/``ReduceMean``/``ReduceMax`` over ``axes`` (an input from opset 18 on, and
        always for ReduceSum; an attribute before)."""
        if op_type == "ReduceSum" or self.opset >= 18:
            return self.op(op_type, [x, self.ints(axes)], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=keepdims)

    def matmul(self, x: str, weight: np.ndarray, bias: np.ndarray | None, hint: str) -> str:
        """``x @ weight + bias`` (``weight`` is ``(D_in, D_out)``)."""
        y = self.op("MatMul", [x, self.const(weight, f"{hint}_w")], hint)
        return y if bias is None else self.op("Add", [y, self.const(bias, f"{hint}_b")], hint)

    def merge(self, model, prefix: str, feeds: dict[str, str]) -> dict[str, str]:
        """Add ``model``'s graph (an ``onnx.ModelProto``) with every name prefixed, its inputs fed by
        ``feeds`` (its input name -> a name in this graph); returns its outputs' new names."""
        import onnx
        from onnx import helper

        base, n = prefix, 1
        while prefix in self._prefixes:  # the same backbone twice (an ensemble's members)
            prefix, n = f"{base.rstrip('/')}#{n}/", n + 1
        self._prefixes.add(prefix)
        graph = onnx.GraphProto()
        graph.CopyFrom(model.graph)
        _prefix_names(graph, prefix)
        for name, source in feeds.items():  # an Identity per input: subgraphs (a Loop's body) may read it too
            self.nodes.append(helper.make_node("Identity", [source], [prefix + name], name=self.name("n_feed")))
        self.nodes.extend(graph.node)
        self.initializers.extend(graph.initializer)
        return {o.name[len(prefix):]: o.name for o in graph.output}

    def merge_torch(self, module, sample: tuple, prefix: str, feeds: dict[str, str], outputs: list[str],
                    axes: dict[str, dict[int, str]]) -> dict[str, str]:
        """A torch module exported at this graph's opset (its inputs named by ``feeds``' keys, in
        order; ``axes``: the dynamic ones) and merged under ``prefix``; its outputs' new names."""
        import tempfile
        from pathlib import Path

        import onnx

        from transfuse.engines.onnx import export_module

        with tempfile.TemporaryDirectory() as tmp:
            net = onnx.load(export_module(module, sample, Path(tmp) / "net.onnx", list(feeds), outputs, axes,
                                          self.opset))
        return self.merge(net, prefix, feeds)

    def model(self, outputs: dict[str, tuple[str, list]], producer: str = "transfuse"):
        """The ONNX model whose outputs are ``{name: (tensor, shape)}`` (renamed by Identity nodes)."""
        import onnx
        from onnx import helper

        outs = []
        for name, (tensor, shape) in outputs.items():
            self.nodes.append(helper.make_node("Identity", [tensor], [name], name=self.name("n_out")))
            elem = onnx.TensorProto.INT64 if name == "label" else onnx.TensorProto.FLOAT
            outs.append(helper.make_tensor_value_info(name, elem, shape))
        graph = helper.make_graph(self.nodes, "transfuse", self.inputs, outs, self.initializers)
        model = helper.make_model(graph, producer_name=producer,
                                  opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = min(model.ir_version, 10)  # what current ONNX Runtime releases read
        helper.set_model_props(model, self.metadata)
        return model


def _prefix_names(graph, prefix: str) -> None:
    """Every tensor and node name in ``graph`` and its subgraphs (a Loop's body, which may read the
    outer graph's tensors by name) prefixed alike, in place; empty names (absent optional inputs)
    stay empty."""
    from onnx import AttributeProto

    def renamed(names) -> list[str]:
        return [prefix + n if n else n for n in names]

    for values in (graph.input, graph.output, graph.value_info, graph.initializer, graph.sparse_initializer):
        for v in values:
            if hasattr(v, "values"):  # a sparse initializer names its values tensor
                v.values.name = prefix + v.values.name
            else:
                v.name = prefix + v.name
    for node in graph.node:
        node.input[:] = renamed(node.input)
        node.output[:] = renamed(node.output)
        node.name = prefix + node.name
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _prefix_names(attr.g, prefix)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _prefix_names(sub, prefix)
