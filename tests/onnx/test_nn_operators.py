"""The neural-network operators flux imports (`flux/onnx/operators/nn.py`, `normalization.py`,
`activations.py`, `recurrent.py`), all through `flux.onnx.load` (ONNX's own node tests of them
run in test_node_suite.py): one-node models with their weights as initializers (Params)
against onnxruntime, layers against PyTorch, gradients (`flux.back`) against finite
differences, erf against `math.erf`, the recurrent operators as loops, graphs that do not
depend on the batch size, and errors."""
import math

import numpy as np
import pytest

import flux

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

from flux.ir import primitives as P  # noqa: E402

# -- one-node models against onnxruntime -----------------------------------------------------------

RNG = np.random.default_rng(0)


def _array(*shape, scale=1.0, dtype=np.float32):
    return (RNG.standard_normal(shape) * scale).astype(dtype)


def one_node(op, inputs, attrs=None, *, weights=(), outputs=1, opset=18, free_axis=None,
             check=True):
    """A checked one-node model: `inputs` ``[(name, array or None)]`` (None: left out), those
    named in `weights` as initializers (Params when loaded), the rest graph inputs (their
    axis `free_axis` of symbolic size ``N``); the outputs' types are ONNX's shape inference's
    (or the first input's dtype and rank where it infers none). `check`: onnx.checker passes
    it (it refuses the operators ONNX has deprecated)."""
    names = [name if a is not None else "" for name, a in inputs]
    while names and not names[-1]:
        names.pop()
    outs = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    graph_inputs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(a.dtype),
        [("N" if i == free_axis else d) for i, d in enumerate(a.shape)])
        for name, a in inputs if a is not None and name not in weights]
    inits = [numpy_helper.from_array(a, name) for name, a in inputs
             if name in weights and a is not None]
    graph = helper.make_graph([node], op.lower(), graph_inputs,
                              [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=check)
    first = inputs[0][1]
    for i, out in enumerate(model.graph.output):
        if not out.type.HasField("tensor_type"):
            model.graph.output[i].CopyFrom(helper.make_tensor_value_info(
                out.name, helper.np_dtype_to_tensor_dtype(first.dtype), [None] * first.ndim))
    if check:
        onnx.checker.check_model(model)
    feeds = {name: a for name, a in inputs if a is not None and name not in weights}
    return model, feeds


def onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def loaded(model, feeds):
    """The model loaded by flux, called on `feeds`: its outputs as a list."""
    m = flux.onnx.load(model)
    out = m(*[feeds[name] for name in m.input_names])
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def assert_like_onnxruntime(op, inputs, attrs=None, *, weights=(), outputs=1, opset=18,
                            rtol=1e-4, atol=1e-5):
    model, feeds = one_node(op, inputs, attrs, weights=weights, outputs=outputs, opset=opset)
    want = onnxruntime(model, feeds)
    got = loaded(model, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.max(np.abs(w)))) if w.size and w.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"{op} {attrs}")


CONVS = [
    ((2, 3, 9), (4, 3, 3), dict()),
    ((2, 3, 9), (4, 3, 3), dict(strides=[2], pads=[1, 2], dilations=[2])),
    ((2, 4, 7, 8), (6, 2, 3, 3), dict(group=2, pads=[1, 0, 2, 1], strides=[2, 1])),
    ((2, 4, 7, 8), (4, 1, 3, 2), dict(group=4, dilations=[2, 1])),
    ((1, 3, 7, 8), (5, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 3, 7, 8), (5, 3, 2, 2), dict(auto_pad="SAME_LOWER", strides=[2, 3])),
    ((1, 3, 7, 8), (5, 3, 3, 3), dict(auto_pad="VALID", kernel_shape=[3, 3])),
    ((2, 2, 5, 6, 4), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1], strides=[1, 2, 1])),
]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape, w_shape, attrs", CONVS)
def test_conv(x_shape, w_shape, attrs, bias):
    b = _array(w_shape[0]) if bias else None
    assert_like_onnxruntime("Conv", [("x", _array(*x_shape)), ("w", _array(*w_shape)),
                                     ("b", b)], attrs, weights=("w", "b"))


CONV_TRANSPOSES = [
    ((2, 3, 5), (3, 2, 3), dict()),
    ((2, 3, 5), (3, 2, 3), dict(strides=[2], pads=[1, 0], output_padding=[1])),
    ((1, 4, 4, 5), (4, 3, 3, 3), dict(group=2, strides=[2, 3], dilations=[1, 2])),
    ((1, 2, 4, 5), (2, 3, 3, 2), dict(strides=[2, 2], output_shape=[10, 11])),
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[2, 2], pads=[1, 2, 0, 1])),
    ((1, 2, 4, 5), (2, 3, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 2, 4, 5), (2, 3, 2, 3), dict(strides=[2, 3], auto_pad="SAME_LOWER")),
    ((1, 2, 3, 4, 3), (2, 2, 2, 2, 3), dict(strides=[2, 1, 2], output_padding=[1, 0, 1])),
]


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV_TRANSPOSES)
def test_conv_transpose(x_shape, w_shape, attrs):
    out_channels = w_shape[1] * attrs.get("group", 1)
    assert_like_onnxruntime("ConvTranspose", [("x", _array(*x_shape)), ("w", _array(*w_shape)),
                                              ("b", _array(out_channels))],
                            attrs, weights=("w", "b"))


POOLS = [
    ((2, 3, 9), dict(kernel_shape=[3])),
    ((2, 3, 9), dict(kernel_shape=[3], strides=[2], pads=[1, 1], ceil_mode=1)),
    ((2, 3, 8, 7), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1])),
    ((2, 3, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ((2, 3, 8, 7), dict(kernel_shape=[3, 3], strides=[2, 3], pads=[1, 1, 1, 1], ceil_mode=1)),
    ((2, 3, 8, 7), dict(kernel_shape=[2, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ((2, 3, 8, 7), dict(kernel_shape=[2, 3], auto_pad="SAME_LOWER", strides=[3, 2])),
    ((2, 3, 9, 8), dict(kernel_shape=[2, 2], dilations=[2, 3], strides=[1, 2])),
    ((2, 3, 9, 8), dict(kernel_shape=[3, 2], dilations=[2, 2], pads=[1, 1, 2, 0],
                        ceil_mode=1, strides=[2, 2])),
    ((1, 2, 5, 6, 5), dict(kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[0, 1, 0, 1, 1, 1])),
]


@pytest.mark.parametrize("x_shape, attrs", POOLS)
def test_max_pool(x_shape, attrs):
    assert_like_onnxruntime("MaxPool", [("x", _array(*x_shape))], attrs)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("x_shape, attrs", [p for p in POOLS if len(p[0]) == 4])
def test_max_pool_indices(x_shape, attrs, storage_order):
    assert_like_onnxruntime("MaxPool", [("x", _array(*x_shape))],
                            dict(attrs, storage_order=storage_order), outputs=2)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("x_shape, attrs", POOLS)
def test_average_pool(x_shape, attrs, count_include_pad):
    assert_like_onnxruntime("AveragePool", [("x", _array(*x_shape))],
                            dict(attrs, count_include_pad=count_include_pad), opset=19)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("x_shape, attrs", [POOLS[0], POOLS[2], POOLS[5], POOLS[7]])
def test_lp_pool(x_shape, attrs, p):
    assert_like_onnxruntime("LpPool", [("x", _array(*x_shape))], dict(attrs, p=p))


@pytest.mark.parametrize("op, attrs", [("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
                                       ("GlobalLpPool", dict(p=2)), ("GlobalLpPool", dict(p=3))])
@pytest.mark.parametrize("x_shape", [(2, 3, 5), (2, 3, 4, 5), (1, 2, 3, 4, 2)])
def test_global_pools(op, attrs, x_shape):
    assert_like_onnxruntime(op, [("x", _array(*x_shape))], attrs)


@pytest.mark.parametrize("attrs, a_shape, b_shape, c_shape", [
    ({}, (4, 3), (3, 5), None),
    ({}, (4, 3), (3, 5), (5,)),
    (dict(transA=1, transB=1, alpha=0.5, beta=2.0), (3, 4), (5, 3), (4, 5)),
    (dict(transB=1, beta=0.0), (4, 3), (5, 3), (1, 5)),
    (dict(alpha=-1.5), (4, 3), (3, 5), (4, 1)),
    ({}, (4, 3), (3, 5), ()),
])
def test_gemm(attrs, a_shape, b_shape, c_shape):
    c = None if c_shape is None else _array(*c_shape)
    assert_like_onnxruntime("Gemm", [("a", _array(*a_shape)), ("b", _array(*b_shape)),
                                     ("c", c)], attrs, weights=("b", "c"))


def _statistics(channels):
    return [("scale", _array(channels) + 1), ("bias", _array(channels)),
            ("mean", _array(channels)), ("var", np.abs(_array(channels)) + 0.5)]


@pytest.mark.parametrize("x_shape", [(3, 4), (3, 4, 5), (2, 4, 3, 5)])
def test_batch_normalization(x_shape):
    assert_like_onnxruntime("BatchNormalization",
                            [("x", _array(*x_shape))] + _statistics(x_shape[1]),
                            dict(epsilon=1e-3), weights=("scale", "bias", "mean", "var"),
                            opset=15)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
def test_layer_normalization(axis):
    x = _array(2, 3, 4, 5)
    shape = x.shape[axis % 4:]
    assert_like_onnxruntime("LayerNormalization",
                            [("x", x), ("scale", _array(*shape)), ("b", _array(*shape))],
                            dict(axis=axis, epsilon=1e-4), weights=("scale", "b"), outputs=3,
                            opset=17)


def test_instance_group_and_mean_variance_normalization():
    x = _array(2, 6, 4, 5)
    assert_like_onnxruntime("InstanceNormalization",
                            [("x", x), ("scale", _array(6)), ("b", _array(6))],
                            dict(epsilon=1e-4), weights=("scale", "b"))
    assert_like_onnxruntime("GroupNormalization",
                            [("x", x), ("scale", _array(6)), ("b", _array(6))],
                            dict(num_groups=3, epsilon=1e-4), weights=("scale", "b"),
                            opset=21)
    assert_like_onnxruntime("MeanVarianceNormalization", [("x", x)], dict(axes=[0, 2, 3]))
    assert_like_onnxruntime("MeanVarianceNormalization", [("x", x)], dict(axes=[1, 3]))


def test_group_normalization_of_opset_18_scales_per_group():
    """Opset 18's scale and bias hold one value per group (21's one per channel): the same
    model with them repeated per channel at opset 21 is the oracle."""
    x, scale, b = _array(2, 6, 4, 5), _array(3), _array(3)
    old, feeds = one_node("GroupNormalization", [("x", x), ("scale", scale), ("b", b)],
                          dict(num_groups=3), weights=("scale", "b"), opset=18, check=False)
    new, _ = one_node("GroupNormalization",
                      [("x", x), ("scale", np.repeat(scale, 2)), ("b", np.repeat(b, 2))],
                      dict(num_groups=3), weights=("scale", "b"), opset=21)
    np.testing.assert_allclose(loaded(old, feeds)[0], onnxruntime(new, feeds)[0], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_lrn(size):
    """onnxruntime takes odd sizes only (and ONNX's reference evaluator sums the wrong
    channels): the oracle is the operator page's formula in NumPy, and onnxruntime."""
    x = _array(2, 7, 3, 4) * 3
    model, feeds = one_node("LRN", [("x", x)], dict(size=size, alpha=0.3, beta=0.6, bias=1.5))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    squares = np.stack([np.sum(x[:, max(0, c - lo):c + hi + 1] ** 2, axis=1)
                        for c in range(x.shape[1])], axis=1)
    want = x / (1.5 + 0.3 / size * squares) ** 0.6
    np.testing.assert_allclose(loaded(model, feeds)[0], want, rtol=1e-5, atol=1e-6)
    if size % 2:
        np.testing.assert_allclose(want, onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-6)


ACTIVATIONS = [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("LeakyRelu", dict(alpha=0.3)),
    ("Elu", dict(alpha=0.7)), ("Selu", {}), ("Selu", dict(alpha=1.5, gamma=0.5)),
    ("Celu", dict(alpha=0.6)), ("HardSigmoid", dict(alpha=0.3, beta=0.4)), ("HardSwish", {}),
    ("Softplus", {}), ("Softsign", {}), ("Mish", {}), ("ThresholdedRelu", dict(alpha=0.4)),
    ("Shrink", dict(lambd=0.7, bias=0.2)), ("Erf", {}), ("Gelu", {}),
    ("Gelu", dict(approximate="tanh")),
]


@pytest.mark.parametrize("op, attrs", ACTIVATIONS)
def test_activations(op, attrs):
    x = np.concatenate([np.linspace(-30, 30, 240), _array(200) * 3]).astype(np.float32)
    assert_like_onnxruntime(op, [("x", x.reshape(2, -1))], attrs,
                            opset=20 if op == "Gelu" else 18, rtol=1e-5, atol=2e-6)


def test_prelu_broadcasts_its_slope():
    x = _array(2, 3, 4, 5)
    for slope in (_array(3, 1, 1), _array(5), _array(1)):
        assert_like_onnxruntime("PRelu", [("x", x), ("slope", slope)], weights=("slope",))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset, axis", [(11, None), (11, 0), (11, 2), (11, -1),
                                         (13, None), (13, 0), (13, 1), (13, -2)])
def test_softmax_family(op, opset, axis):
    x = _array(2, 3, 4, 5) * 3
    x[0, 0, 0, :2] = 5.0                        # a tie: Hardmax picks the first maximum
    attrs = {} if axis is None else dict(axis=axis)
    assert_like_onnxruntime(op, [("x", x)], attrs, opset=opset)


def test_dropout_in_inference_is_the_identity_with_a_true_mask():
    x = _array(3, 4)
    for opset, mask in ((7, np.float32), (10, np.bool_), (13, np.bool_)):
        model, feeds = one_node("Dropout", [("x", x)], dict(ratio=0.3) if opset < 12 else {},
                                outputs=2, opset=opset)
        y, m = loaded(model, feeds)
        np.testing.assert_array_equal(y, x)
        assert m.dtype == mask and m.shape == x.shape and np.all(m)
    ratio, off = np.array(0.4, np.float32), np.array(False)
    model, feeds = one_node("Dropout", [("x", x), ("ratio", ratio), ("t", off)],
                            weights=("ratio", "t"), outputs=1, opset=13)
    np.testing.assert_array_equal(loaded(model, feeds)[0], x)


def _rnn_inputs(op, direction, *, n_steps=5, batch=3, n_in=4, hidden=6, lengths=None,
                layout=0, initial=True, peepholes=True):
    gates = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    d = 2 if direction == "bidirectional" else 1
    x_shape = (n_steps, batch, n_in) if layout == 0 else (batch, n_steps, n_in)
    state_shape = (d, batch, hidden) if layout == 0 else (batch, d, hidden)
    inputs = [("X", _array(*x_shape)), ("W", _array(d, gates * hidden, n_in, scale=0.5)),
              ("R", _array(d, gates * hidden, hidden, scale=0.5)),
              ("B", _array(d, 2 * gates * hidden, scale=0.5)),
              ("lengths", None if lengths is None else np.array(lengths, np.int32)),
              ("h0", _array(*state_shape) if initial else None)]
    if op == "LSTM":
        inputs += [("c0", _array(*state_shape) if initial else None),
                   ("P", _array(d, 3 * hidden, scale=0.5) if peepholes else None)]
    return inputs


RNN_ATTRS = {
    "RNN": [{}, dict(clip=0.5), dict(activations=["Relu"]),
            dict(activations=["LeakyRelu"], activation_alpha=[0.3])],
    "GRU": [{}, dict(linear_before_reset=1), dict(clip=0.6, linear_before_reset=1),
            dict(activations=["HardSigmoid", "Softsign"], activation_alpha=[0.3],
                 activation_beta=[0.4])],
    "LSTM": [{}, dict(clip=0.7), dict(input_forget=1),
             dict(activations=["HardSigmoid", "ScaledTanh", "Affine"],
                  activation_alpha=[0.3, 0.8, 1.3], activation_beta=[0.4, 1.2, 0.1])],
}


@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op, attrs", [(op, a) for op, attrs in RNN_ATTRS.items()
                                       for a in attrs])
def test_recurrent(op, attrs, direction, lengths):
    d = 2 if direction == "bidirectional" else 1
    attrs = {k: v * d if isinstance(v, list) else v for k, v in attrs.items()}
    inputs = _rnn_inputs(op, direction, lengths=lengths)
    assert_like_onnxruntime(op, inputs, dict(attrs, direction=direction, hidden_size=6),
                            weights=("W", "R", "B", "P"), outputs=3 if op == "LSTM" else 2)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_defaults_without_biases_or_initial_states(op):
    inputs = _rnn_inputs(op, "forward", initial=False, peepholes=False)
    inputs = [(n, None if n == "B" else a) for n, a in inputs]
    assert_like_onnxruntime(op, inputs, dict(hidden_size=6), weights=("W", "R"),
                            outputs=3 if op == "LSTM" else 2)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_layout_1_is_layout_0_with_batch_first(op):
    """onnxruntime refuses ``layout=1``: its oracle is the same node at layout 0 on the
    inputs with their first two axes swapped."""
    n_out = 3 if op == "LSTM" else 2
    inputs = _rnn_inputs(op, "bidirectional", layout=1, lengths=[5, 3, 4])
    attrs = dict(direction="bidirectional", hidden_size=6)
    swapped = [(n, np.swapaxes(a, 0, 1) if n in ("X", "h0", "c0") else a) for n, a in inputs]
    batch_first, feeds = one_node(op, inputs, dict(attrs, layout=1), outputs=n_out,
                                  weights=("W", "R", "B", "P"))
    time_first, feeds0 = one_node(op, swapped, attrs, outputs=n_out, weights=("W", "R", "B", "P"))
    got, want = loaded(batch_first, feeds), onnxruntime(time_first, feeds0)
    np.testing.assert_allclose(got[0], np.transpose(want[0], (2, 0, 1, 3)), rtol=1e-4, atol=1e-5)
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_allclose(g, np.swapaxes(w, 0, 1), rtol=1e-4, atol=1e-5)


# -- layers against PyTorch ----------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _t(torch, a):
    return torch.from_numpy(np.ascontiguousarray(a))


def test_conv_and_conv_transpose_give_pytorchs_outputs(torch):
    x = _array(2, 4, 9, 8)
    conv = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                           groups=2)
    model, feeds = one_node("Conv", [("x", x), ("w", conv.weight.detach().numpy()),
                                     ("b", conv.bias.detach().numpy())],
                            dict(strides=[2, 1], pads=[1, 2, 1, 2], dilations=[1, 2], group=2),
                            weights=("w", "b"))
    np.testing.assert_allclose(loaded(model, feeds)[0], conv(_t(torch, x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    deconv = torch.nn.ConvTranspose2d(4, 6, (3, 3), stride=(2, 3), padding=(1, 0),
                                      output_padding=(1, 2), dilation=(1, 2), groups=2)
    model, feeds = one_node("ConvTranspose", [("x", x), ("w", deconv.weight.detach().numpy()),
                                              ("b", deconv.bias.detach().numpy())],
                            dict(strides=[2, 3], pads=[1, 0, 1, 0], output_padding=[1, 2],
                                 dilations=[1, 2], group=2), weights=("w", "b"))
    np.testing.assert_allclose(loaded(model, feeds)[0], deconv(_t(torch, x)).detach().numpy(),
                               rtol=1e-4, atol=1e-5)


def test_pools_give_pytorchs_outputs(torch):
    x = _array(2, 3, 9, 8)
    pool = torch.nn.MaxPool2d((3, 2), stride=(2, 2), padding=(1, 1), dilation=(2, 1),
                              ceil_mode=True, return_indices=True)
    want, where = pool(_t(torch, x))
    model, feeds = one_node("MaxPool", [("x", x)],
                            dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 1],
                                 dilations=[2, 1], ceil_mode=1), outputs=2, opset=12)
    y, indices = loaded(model, feeds)
    np.testing.assert_array_equal(y, want.numpy())
    plane = np.arange(2 * 3).reshape(2, 3, 1, 1) * 9 * 8     # ONNX counts over the whole tensor
    np.testing.assert_array_equal(indices, where.numpy() + plane)
    for include in (False, True):
        avg = torch.nn.AvgPool2d((3, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True,
                                 count_include_pad=include)
        model, feeds = one_node("AveragePool", [("x", x)],
                                dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                     ceil_mode=1, count_include_pad=int(include)))
        np.testing.assert_allclose(loaded(model, feeds)[0], avg(_t(torch, x)).numpy(),
                                   rtol=1e-5, atol=1e-6)


def _onnx_weights(layer, suffix, gates):
    """A PyTorch recurrent layer's weights of one direction in ONNX's gate order."""
    def order(w):
        parts = np.split(w.detach().numpy(), len(gates))
        return np.concatenate([parts[g] for g in gates])
    w, r = (order(getattr(layer, f"weight_{k}_l0{suffix}")) for k in ("ih", "hh"))
    b = np.concatenate([order(getattr(layer, f"bias_{k}_l0{suffix}")) for k in ("ih", "hh")])
    return w, r, b


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_recurrent_operators_give_pytorchs_outputs(torch, op):
    """PyTorch's gates are i, f, g, o (LSTM) and r, z, n (GRU, which is ONNX's GRU with
    ``linear_before_reset=1``); ONNX's are i, o, f, c and z, r, h."""
    gates = {"RNN": [0], "GRU": [1, 0, 2], "LSTM": [0, 3, 1, 2]}[op]
    layer = getattr(torch.nn, op)(4, 5, bidirectional=True)
    w, r, b = (np.stack(parts) for parts in zip(*(_onnx_weights(layer, s, gates)
                                                  for s in ("", "_reverse"))))
    x, h0, c0 = _array(7, 3, 4), _array(2, 3, 5), _array(2, 3, 5)
    inputs = [("X", x), ("W", w), ("R", r), ("B", b), ("lengths", None), ("h0", h0)]
    attrs = dict(direction="bidirectional", hidden_size=5)
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    if op == "LSTM":
        inputs.append(("c0", c0))
        want_y, (want_h, want_c) = layer(_t(torch, x), (_t(torch, h0), _t(torch, c0)))
    else:
        want_y, want_h = layer(_t(torch, x), _t(torch, h0))
    model, feeds = one_node(op, inputs, attrs, weights=("W", "R", "B"),
                            outputs=3 if op == "LSTM" else 2)
    got = loaded(model, feeds)
    y = np.transpose(got[0], (0, 2, 1, 3)).reshape(7, 3, 10)      # (T, N, D·H), as PyTorch
    np.testing.assert_allclose(y, want_y.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[1], want_h.detach().numpy(), rtol=1e-4, atol=1e-5)
    if op == "LSTM":
        np.testing.assert_allclose(got[2], want_c.detach().numpy(), rtol=1e-4, atol=1e-5)


# -- gradients against finite differences ---------------------------------------------------------


def _f64(*shape, scale=1.0):
    return _array(*shape, scale=scale, dtype=np.float64)


GRADIENT_CASES = {
    "Conv": (lambda: [("x", _f64(2, 4, 6, 5)), ("w", _f64(6, 2, 3, 2)), ("b", _f64(6))],
             dict(pads=[1, 0, 1, 1], strides=[2, 1], group=2)),
    "ConvTranspose": (lambda: [("x", _f64(2, 3, 4, 3)), ("w", _f64(3, 2, 3, 2)),
                               ("b", _f64(2))], dict(strides=[2, 1], pads=[1, 0, 0, 1])),
    "Gemm": (lambda: [("a", _f64(3, 4)), ("b", _f64(5, 4)), ("c", _f64(5))],
             dict(transB=1, alpha=0.7, beta=1.3)),
    "BatchNormalization": (lambda: [("x", _f64(3, 4, 2, 3)), ("scale", _f64(4)),
                                    ("bias", _f64(4)), ("mean", _f64(4)),
                                    ("var", np.abs(_f64(4)) + 0.5)], {}),
    "LayerNormalization": (lambda: [("x", _f64(3, 4, 5)), ("scale", _f64(4, 5)),
                                    ("b", _f64(4, 5))], dict(axis=1)),
    "LSTM": (lambda: _rnn_f64("LSTM"), dict(hidden_size=3, direction="bidirectional")),
    "GRU": (lambda: _rnn_f64("GRU"), dict(hidden_size=3, linear_before_reset=1)),
    "Erf": (lambda: [("x", np.linspace(-3.5, 3.5, 36).reshape(6, 6))], {}),
    "Gelu": (lambda: [("x", np.linspace(-3.5, 3.5, 36).reshape(6, 6))], {}),
    "MaxPool": (lambda: [("x", _f64(2, 3, 6, 5))], dict(kernel_shape=[2, 3], pads=[1, 1, 0, 1],
                                                        dilations=[2, 1])),
    "AveragePool": (lambda: [("x", _f64(2, 3, 6, 5))], dict(kernel_shape=[3, 2], ceil_mode=1,
                                                            strides=[2, 2])),
}


def _rnn_f64(op):
    gates = {"GRU": 3, "LSTM": 4}[op]
    d = 2 if op == "LSTM" else 1
    return [("X", _f64(4, 2, 3)), ("W", _f64(d, gates * 3, 3, scale=0.5)),
            ("R", _f64(d, gates * 3, 3, scale=0.5)), ("B", _f64(d, 6 * gates, scale=0.5)),
            ("lengths", None), ("h0", _f64(d, 2, 3))]


@pytest.mark.parametrize("op", GRADIENT_CASES)
def test_gradients_match_finite_differences(op):
    """`flux.back` on a loaded float64 model (the first input traced, the rest Params) against
    central differences of ``Σ y · δ``, for the inputs and a few entries of every Param."""
    make, attrs = GRADIENT_CASES[op]
    inputs = make()
    weights = tuple(name for name, a in inputs[1:] if a is not None)
    outputs = 3 if op == "LSTM" else 1
    model, feeds = one_node(op, inputs, attrs, weights=weights, outputs=outputs,
                            opset=20 if op == "Gelu" else 18)
    m = flux.onnx.load(model)
    x = feeds[m.input_names[0]]
    out = m(x)
    out = out if isinstance(out, tuple) else (out,)
    deltas = tuple(np.random.default_rng(1).standard_normal(np.shape(o)) for o in out)

    def objective():
        values = m(x)
        values = values if isinstance(values, tuple) else (values,)
        return sum(float(np.sum(np.asarray(v) * d)) for v, d in zip(values, deltas))

    (dx,) = flux.back(m, deltas if outputs > 1 else deltas[0], x)
    eps = 1e-6
    for index in list(np.ndindex(*x.shape))[::max(1, x.size // 12)]:
        saved = x[index]
        x[index] = saved + eps
        up = objective()
        x[index] = saved - eps
        down = objective()
        x[index] = saved
        assert dx[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-7), index
    for name, p in flux.params(m).items():
        for index in list(np.ndindex(*p.shape))[::max(1, p.size // 5)]:
            saved = p.value[index]
            p.value[index] = saved + eps
            up = objective()
            p.value[index] = saved - eps
            down = objective()
            p.value[index] = saved
            assert p.grad[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5,
                                                  abs=1e-7), (name, index)


# -- erf -------------------------------------------------------------------------------------------


def test_erf_is_accurate_to_float32_rounding_and_so_is_its_gradient():
    x = np.linspace(-6, 6, 240_001).astype(np.float32)
    model, feeds = one_node("Erf", [("x", x)], free_axis=0)
    m = flux.onnx.load(model)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.max(np.abs(m(x).astype(np.float64) - want)) < 1e-7
    (dx,) = flux.back(m, np.ones_like(x), x)
    slope = 2 / math.sqrt(math.pi) * np.exp(-x.astype(np.float64) ** 2)
    assert np.max(np.abs(dx - slope)) < 1e-6
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(m(special), [0.0, 0.0, 1.0, -1.0, np.nan])


# -- loops, batch-generic graphs ---------------------------------------------------------------


def _lstm_model(n_steps):
    inputs = _rnn_inputs("LSTM", "forward", n_steps=n_steps, initial=False, peepholes=True)
    model, feeds = one_node("LSTM", inputs, dict(hidden_size=6), weights=("W", "R", "B", "P"),
                            outputs=3)
    return flux.onnx.load(model), feeds["X"]


def test_an_imported_recurrence_is_one_loop_whose_size_does_not_grow_with_its_length(
        monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "scan")
    sizes = []
    for n_steps in (5, 50):
        m, x = _lstm_model(n_steps)
        graph = flux.compile(m).graph(x)
        loops = [e for e in graph.eqns if e.prim is P.scan_p]
        assert len(loops) == 1
        sizes.append((len(graph.eqns), len(loops[0].attrs["body"].eqns)))
    assert sizes[0] == sizes[1]


def test_the_loop_computes_what_the_unrolled_steps_compute(monkeypatch):
    monkeypatch.setenv("FLUX_LOOPS", "scan")
    m, x = _lstm_model(6)
    looped = m(x)
    delta = tuple(np.ones_like(v) for v in looped)
    (dx_looped,) = flux.back(m, delta, x)
    grads = {k: p.grad.copy() for k, p in flux.params(m).items()}
    monkeypatch.setenv("FLUX_LOOPS", "unroll")
    unrolled_model, _ = _lstm_model(6)
    for p, q in zip(flux.params(unrolled_model).values(), flux.params(m).values()):
        p.value = q.value
    graph = flux.compile(unrolled_model).graph(x)
    assert not any(e.prim is P.scan_p for e in graph.eqns)
    for a, b in zip(unrolled_model(x), looped):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    (dx_unrolled,) = flux.back(unrolled_model, delta, x)
    np.testing.assert_allclose(dx_unrolled, dx_looped, rtol=1e-5, atol=1e-6)
    for k, p in flux.params(unrolled_model).items():
        np.testing.assert_allclose(p.grad, grads[k], rtol=1e-5, atol=1e-6, err_msg=k)


def test_shapes_show_one_step_of_an_imported_recurrence_and_summary_counts_its_params():
    inputs = _rnn_inputs("GRU", "bidirectional", initial=False)
    model, feeds = one_node("GRU", inputs, dict(hidden_size=6, direction="bidirectional"),
                            weights=("W", "R", "B"), outputs=2)
    m = flux.onnx.load(model)
    text = str(flux.shapes(m, feeds["X"]))
    assert "over_5_steps" in text and "::(5, 2, 3, 6)" in text and "::(2, 3, 6)" in text
    assert "Total params: 432" in str(flux.summary(m, feeds["X"]))      # W 144, R 216, B 72


def test_an_imported_cnn_trains():
    """Conv → BatchNormalization → Relu → MaxPool → GlobalAveragePool → Flatten → Gemm
    trained with `flux.train` on a fixed batch: the loss goes down."""
    nodes = [helper.make_node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "o", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "b"], ["y"], transB=1)]
    rng = np.random.default_rng(7)

    def normal(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    weights = {"w": normal(4, 2, 3, 3) * 0.5, "cb": normal(4), "s": normal(4) + 1,
               "o": normal(4), "m": normal(4), "v": np.abs(normal(4)) + 1,
               "W": normal(3, 4), "b": normal(3)}
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT,
                                                     ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(a, k) for k, a in weights.items()])
    m = flux.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]))
    x, y = normal(6, 2, 8, 8), normal(6, 3)
    losses = flux.train(m, [(x, y)] * 20, loss=flux.mse, opt=flux.SGD(0.01), epochs=3)
    assert losses[-1] < losses[0]


BATCH_GENERIC = [
    ("Conv", lambda: [("x", _array(2, 3, 6, 6)), ("w", _array(4, 3, 3, 3)), ("b", _array(4))],
     dict(pads=[1, 1, 1, 1]), 0),
    ("ConvTranspose", lambda: [("x", _array(2, 3, 4, 4)), ("w", _array(3, 2, 3, 3))],
     dict(strides=[2, 2], output_shape=[10, 10]), 0),
    ("MaxPool", lambda: [("x", _array(2, 3, 6, 6))], dict(kernel_shape=[3, 3], ceil_mode=1,
                                                         strides=[2, 2], dilations=[1, 2]), 0),
    ("AveragePool", lambda: [("x", _array(2, 3, 6, 6))], dict(kernel_shape=[3, 3],
                                                             pads=[1, 1, 1, 1]), 0),
    ("BatchNormalization", lambda: [("x", _array(2, 4, 3))] + _statistics(4), {}, 0),
    ("LayerNormalization", lambda: [("x", _array(2, 4, 3)), ("scale", _array(3))], {}, 0),
    ("LRN", lambda: [("x", _array(2, 4, 3, 3))], dict(size=3), 0),
    ("LSTM", lambda: _rnn_inputs("LSTM", "bidirectional", initial=False),
     dict(hidden_size=6, direction="bidirectional"), 1),
    ("GRU", lambda: _rnn_inputs("GRU", "reverse", initial=False),
     dict(hidden_size=6, direction="reverse"), 1),
]


@pytest.mark.parametrize("op, make, attrs, axis", BATCH_GENERIC,
                         ids=[case[0] for case in BATCH_GENERIC])
def test_imported_graphs_do_not_depend_on_the_batch_size(op, make, attrs, axis):
    """What `flux.onnx.export` needs to write a symbolic batch axis: the graph traced at two
    batch sizes differs only in that axis (no batch-sized constants)."""
    inputs = make()
    weights = tuple(name for name, _ in inputs[1:])
    model, feeds = one_node(op, inputs, attrs, weights=weights, free_axis=axis)
    m = flux.onnx.load(model)
    _, avals, tree = flux.backends.abstract_inputs(m, (feeds[m.input_names[0]],), "test")
    flux.backends.free_batch(m, avals, tree, "test", axis=axis)


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("op, inputs, attrs, message", [
    ("Dropout", [("x", np.ones((2, 3), np.float32)), ("ratio", np.array(0.5, np.float32)),
                 ("t", np.array(True))], {},
     "training mode .* ratio given by the model.* flux.Dropout"),
    ("Conv", [("x", np.ones((1, 2, 5, 5), np.float32)), ("w", np.ones((3, 2, 3, 3), np.float32))],
     dict(kernel_shape=[2, 2]), r"kernel_shape \[2, 2\] does not match .* window \[3, 3\]"),
    ("GroupNormalization", [("x", np.ones((1, 6, 2), np.float32)),
                            ("s", np.ones(6, np.float32)), ("b", np.ones(6, np.float32))],
     dict(num_groups=4), "num_groups must divide the input's 6 channels, found 4"),
    ("MaxPool", [("x", np.ones((1, 2, 5, 5), np.float32))], dict(kernel_shape=[2, 2],
                                                                 strides=[1, 1, 1]),
     "strides has 3 entries, but the input has 2 spatial axes"),
    ("RNN", _rnn_inputs("RNN", "forward")[:3], dict(hidden_size=6, activations=["Cosh"]),
     "activation 'Cosh' is not one of ONNX's recurrent activations"),
    ("LSTM", _rnn_inputs("LSTM", "forward")[:3], dict(hidden_size=5),
     r"hidden_size 5 needs W of shape \(1, 20, input size\)"),
    ("Gelu", [("x", np.ones(3, np.float32))], dict(approximate="fast"),
     "approximate is 'none' or 'tanh', found 'fast'"),
])
def test_errors_name_the_node_and_what_is_wrong(op, inputs, attrs, message):
    weights = tuple(name for name, _ in inputs[1:])
    model, feeds = _unchecked(op, inputs, attrs, weights)
    m = flux.onnx.load(model)
    with pytest.raises(flux.FluxError, match=message) as error:
        m(*[feeds[name] for name in m.input_names])
    assert f"({op})" in str(error.value)


def _unchecked(op, inputs, attrs, weights):
    """A one-node model as `one_node` makes it, without onnx.checker (these are wrong)."""
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "bad", [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype),
                                                      a.shape)
                        for n, a in inputs if n not in weights],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, n) for n, a in inputs if n in weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 8
    return model, {n: a for n, a in inputs if n not in weights}


# -- layouts: channels-first views of channels-last values ----------------------------------------


def test_elementwise_operators_between_convolutions_run_channels_last():
    """Conv → Relu → MaxPool → Sigmoid → Conv: flux computes ReLU and σ on the convolutions'
    own channels-last results (no transposes between the operators: four in all, the input's,
    the output's and the two filters'), and gives onnxruntime's numbers."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Sigmoid", ["p1"], ["s1"]),
             helper.make_node("Conv", ["s1", "w2"], ["y"], kernel_shape=[3, 3])]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 2, 3, 3)).astype("f"), "w1"),
             numpy_helper.from_array(rng.normal(size=(3, 4, 3, 3)).astype("f"), "w2")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m = flux.onnx.load(model)
    assert str(flux.shapes(m, (2, 2, 8, 8))).count("transpose(") == 4
    x = rng.normal(size=(3, 2, 8, 8)).astype("f")
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(flux.compile(m)(x), session.run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)
