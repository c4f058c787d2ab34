"""ONNX's linear quantization: QuantizeLinear and DequantizeLinear, with a scale and zero
point per tensor, per slice along `axis` (1-D scale), or per block of `block_size` along it,
and the quantized products MatMulInteger and QLinearMatMul.

    DequantizeLinear:  y = (x − z) · s                    (in the scale's dtype)
    QuantizeLinear:    y = clip(round(x / s) + z, lo, hi)  (round halves to even; lo, hi the
                                                            range of z's integer dtype)
    MatMulInteger:     y = (a − z_a) @ (b − z_b)           (int32)
    QLinearMatMul:     y = quantize((a − z_a) s_a @ (b − z_b) s_b, s_y, z_y)

The integer dtypes are NumPy's (8, 16 and 32 bits); the 4-bit and float8 ones are not.
"""
from __future__ import annotations

import numpy as np

from flux.onnx.files import tensor_dtype
from flux.onnx.operators.arguments import axis_of
from flux.onnx.operators.elementwise import round_half_even
from flux.onnx.operators.registry import operator


def _spread(node, value, x_shape: tuple):
    """A scale or zero point shaped to broadcast against x: as is when 0-d (per tensor);
    along `axis` when 1-D; repeated `block_size` times along `axis` when blocked."""
    ndim = len(value.shape)
    if ndim == 0 or int(np.prod(value.shape, dtype=np.int64)) == 1 and ndim == 1:
        return np.reshape(value, ())
    axis = axis_of(node, node.attr("axis", 1), len(x_shape))
    block = node.attr("block_size", 0)
    if ndim == 1 and not block:
        return np.reshape(value, tuple(x_shape[axis] if d == axis else 1
                                       for d in range(len(x_shape))))
    if not block:
        raise node.error(f"a scale of shape {tuple(value.shape)} needs block_size")
    blocks = value.shape[axis]
    spread = np.expand_dims(value, axis + 1)
    shape = tuple(value.shape[:axis + 1]) + (block,) + tuple(value.shape[axis + 1:])
    whole = tuple(value.shape[:axis]) + (blocks * block,) + tuple(value.shape[axis + 1:])
    spread = np.reshape(np.broadcast_to(spread, shape), whole)
    return spread[(slice(None),) * axis + (slice(0, x_shape[axis]),)]


@operator("DequantizeLinear", since=10)
def dequantize_linear(node, x, scale, zero_point=None):
    """y = (x − z) · s."""
    dtype = scale.dtype
    if node.attr("output_dtype"):
        dtype = tensor_dtype(node.attr("output_dtype")) or dtype
    s = _spread(node, scale, tuple(x.shape))
    y = x.astype(dtype)
    if zero_point is not None:
        y = y - _spread(node, zero_point, tuple(x.shape)).astype(dtype)
    return (y * s.astype(dtype)) if s.dtype != dtype else y * s


@operator("QuantizeLinear", since=10)
def quantize_linear(node, x, scale, zero_point=None):
    """y = clip(round(x / s) + z, lo, hi) in z's dtype (uint8 without z, or `output_dtype`)."""
    if zero_point is not None:
        dtype = np.dtype(zero_point.dtype)
    else:
        dtype = tensor_dtype(node.attr("output_dtype", 2) or 2)
    if dtype is None or dtype.kind not in "iu":
        raise node.error(f"quantizes to {dtype}, which flux does not compute with")
    s = _spread(node, scale, tuple(x.shape))
    q = round_half_even(x / s.astype(x.dtype))
    if zero_point is not None:
        q = q + _spread(node, zero_point, tuple(x.shape)).astype(x.dtype)
    info = np.iinfo(dtype)
    return np.clip(q, np.asarray(info.min, x.dtype), np.asarray(info.max, x.dtype)).astype(dtype)


@operator("MatMulInteger", since=10)
def matmul_integer(node, a, b, a_zero=None, b_zero=None):
    """(a − z_a) @ (b − z_b) in int32 (a per-row z_a, a per-column z_b)."""
    a, b = a.astype(np.int32), b.astype(np.int32)
    if a_zero is not None:
        z = a_zero.astype(np.int32)
        a = a - (np.reshape(z, (-1, 1)) if len(z.shape) == 1 and z.shape[0] > 1 else z)
    if b_zero is not None:
        b = b - b_zero.astype(np.int32)
    return np.matmul(a, b)


@operator("QLinearMatMul", since=10)
def qlinear_matmul(node, a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero):
    """The product of the dequantized a and b, quantized with y's scale and zero point."""
    def real(x, scale, zero, along):
        scale = np.reshape(scale, along if len(scale.shape) == 1 and scale.shape[0] > 1 else ())
        zero = np.reshape(zero, along if len(zero.shape) == 1 and zero.shape[0] > 1 else ())
        return (x.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)
    product = np.matmul(real(a, a_scale, a_zero, (-1, 1)), real(b, b_scale, b_zero, (1, -1)))
    q = round_half_even(product / y_scale.astype(np.float32))
    q = q + np.reshape(y_zero, ()).astype(np.float32)
    info = np.iinfo(y_zero.dtype)
    return np.clip(q, np.float32(info.min), np.float32(info.max)).astype(y_zero.dtype)
