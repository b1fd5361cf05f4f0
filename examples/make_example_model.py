"""Builds the bundled example model: a small CNN + attention classifier.

It carries, on purpose, the patterns autotune's graph passes rewrite: Conv+BatchNorm+ReLU
stems, a redundant Transpose pair around a ReLU (NCHW→NHWC→NCHW), decomposed LayerNorm and
erf-GELU subgraphs, and MatMuls whose K and N (60, 120) are not multiples of 8. Weights are
seeded random numbers: the model is realistic in structure and cost, not trained.

Run `python examples/make_example_model.py [OUT]` to regenerate `examples/example.onnx`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
EMBED = 60  # deliberately not a multiple of 8
HIDDEN = 120


class _Graph:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"

    def const(self, prefix: str, value: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, prefix: str, shape: tuple[int, ...], fan_in: int) -> str:
        return self.const(prefix, (self.rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs))
        return out

    def conv_bn_relu(self, x: str, cin: int, cout: int) -> str:
        w = self.weight("conv_w", (cout, cin, 3, 3), cin * 9)
        b = self.const("conv_b", np.zeros(cout, np.float32))
        y = self.op("Conv", [x, w, b], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        scale = self.const("bn_scale", (1 + 0.1 * self.rng.standard_normal(cout)).astype(np.float32))
        bias = self.const("bn_bias", (0.1 * self.rng.standard_normal(cout)).astype(np.float32))
        mean = self.const("bn_mean", (0.1 * self.rng.standard_normal(cout)).astype(np.float32))
        var = self.const("bn_var", (1 + 0.1 * self.rng.random(cout)).astype(np.float32))
        y = self.op("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)
        return self.op("Relu", [y])

    def layernorm_decomposed(self, x: str, dim: int) -> str:
        mean = self._reduce_mean(x)
        centered = self.op("Sub", [x, mean])
        sq = self.op("Pow", [centered, self.const("two", np.array(2.0, np.float32))])
        var = self._reduce_mean(sq)
        std = self.op("Sqrt", [self.op("Add", [var, self.const("eps", np.array(1e-5, np.float32))])])
        normed = self.op("Div", [centered, std])
        gamma = self.const("ln_gamma", (1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        beta = self.const("ln_beta", (0.1 * self.rng.standard_normal(dim)).astype(np.float32))
        return self.op("Add", [self.op("Mul", [normed, gamma]), beta])

    def _reduce_mean(self, x: str) -> str:
        return self.op("ReduceMean", [x], axes=[-1], keepdims=1)

    def gelu_erf(self, x: str) -> str:
        scaled = self.op("Div", [x, self.const("sqrt2", np.array(np.sqrt(2.0), np.float32))])
        erf = self.op("Erf", [scaled])
        one_plus = self.op("Add", [erf, self.const("one", np.array(1.0, np.float32))])
        return self.op("Mul", [self.op("Mul", [x, one_plus]), self.const("half", np.array(0.5, np.float32))])

    def linear(self, x: str, cin: int, cout: int) -> str:
        y = self.op("MatMul", [x, self.weight("fc_w", (cin, cout), cin)])
        return self.op("Add", [y, self.const("fc_b", np.zeros(cout, np.float32))])


def build_example_model(seed: int = 0) -> onnx.ModelProto:
    """Returns the example classifier: input "images" float32 [batch, 3, 96, 96], output "logits"."""
    g = _Graph(seed)
    x = g.conv_bn_relu("images", 3, 24)  # 48x48
    x = g.conv_bn_relu(x, 24, 48)  # 24x24
    x = g.conv_bn_relu(x, 48, EMBED)  # 12x12
    # A layout round trip an exporter leaves behind: NCHW -> NHWC -> ReLU -> NCHW.
    x = g.op("Transpose", [x], perm=[0, 2, 3, 1])
    x = g.op("Relu", [x])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    tokens = g.op("Reshape", [x, g.const("shape", np.array([0, EMBED, -1], np.int64))])
    tokens = g.op("Transpose", [tokens], perm=[0, 2, 1])  # [B, 144, EMBED]

    h = g.layernorm_decomposed(tokens, EMBED)
    q, k, v = (g.linear(h, EMBED, EMBED) for _ in range(3))
    scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 2, 1])])
    scores = g.op("Mul", [scores, g.const("inv_sqrt_d", np.array(1 / np.sqrt(EMBED), np.float32))])
    attn = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    tokens = g.op("Add", [tokens, g.linear(attn, EMBED, EMBED)])

    h = g.layernorm_decomposed(tokens, EMBED)
    h = g.linear(g.gelu_erf(g.linear(h, EMBED, HIDDEN)), HIDDEN, EMBED)
    tokens = g.op("Add", [tokens, h])

    pooled = g.op("ReduceMean", [tokens], axes=[1], keepdims=0)  # [B, EMBED]
    head_w = g.weight("head_w", (10, EMBED), EMBED)
    head_b = g.const("head_b", np.zeros(10, np.float32))
    g.op("Gemm", [pooled, head_w, head_b], transB=1)
    g.nodes[-1].output[0] = "logits"

    graph = helper.make_graph(
        g.nodes,
        "autotune_example",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 96, 96])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="autotune")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("example.onnx")
    onnx.save(build_example_model(), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
