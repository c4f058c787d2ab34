"""NumPy functions inside models, as users write them: einsum, tensordot, outer, cumsum, split,
tile, flip, pad, linalg.norm, take_along_axis, argmax/argmin. Each case is one function that
runs as NumPy on arrays and is traced inside `flux.net`: the model's values must be NumPy's
(shapes and dtypes too), its graph must be primitives only, and `flux.back`'s input gradients
must match central finite differences (float64 inputs, no Params). Errors for what cannot be
translated are flux errors naming the argument."""
import numpy as np
import pytest

import flux
from flux.ir import primitives as P
from flux.ops import dispatch, norms
from flux.testing import assert_grads_close, finite_differences

RNG = np.random.default_rng(0)


def randn(*shape):
    return RNG.standard_normal(shape)


_CONSTANTS: dict = {}


def const(*shape):
    """A constant operand: the same array on every call (the function runs more than once)."""
    if shape not in _CONSTANTS:
        _CONSTANTS[shape] = randn(*shape)
    return _CONSTANTS[shape]


Y = randn(2, 4, 5)
A34, B45 = randn(3, 4), randn(4, 5)
IDX = RNG.integers(-3, 3, (2, 5, 4))


class Case:
    """`f(*inputs)`; `grad`: whether the result is differentiable in the first input."""

    def __init__(self, f, *inputs, grad=True):
        self.f, self.inputs, self.grad = f, inputs, grad


CASES = {
    # einsum: the brief's example, implicit and explicit outputs, ellipses, several operands
    "einsum_batch_matmul_const": Case(lambda x: np.einsum("bij,bjk->bik", x, Y), randn(2, 3, 4)),
    "einsum_batch_matmul_both": Case(lambda x, y: np.einsum("bij,bjk->bik", x, y),
                                     randn(2, 3, 4), randn(2, 4, 5)),
    "einsum_implicit": Case(lambda x: np.einsum("ij,jk", x, B45), A34),
    "einsum_implicit_order": Case(lambda x: np.einsum("ba,aC", x, B45), A34),   # C before b
    "einsum_transpose": Case(lambda x: np.einsum("ijk->kij", x), randn(2, 3, 4)),
    "einsum_sum_all": Case(lambda x: np.einsum("ij->", x), A34),
    "einsum_sum_axis": Case(lambda x: np.einsum("ij->j", x), A34),
    "einsum_implicit_one": Case(lambda x: np.einsum("ji", x), A34),
    "einsum_dot": Case(lambda x: np.einsum("i,i", x, np.arange(4.0)), randn(4)),
    "einsum_dot_self": Case(lambda x: np.einsum("i,i->", x, x), randn(4)),
    "einsum_outer": Case(lambda x: np.einsum("i,j->ij", x, np.arange(3.0)), randn(4)),
    "einsum_matvec": Case(lambda x: np.einsum("ij,j->i", x, np.arange(4.0)), A34),
    "einsum_elementwise": Case(lambda x: np.einsum("ij,ij->ij", x, x), A34),
    "einsum_batch_kept": Case(lambda x: np.einsum("bi,bi->b", x, x), A34),
    "einsum_lonely_index": Case(lambda x: np.einsum("ijk,k->i", x, np.arange(4.0)),
                                randn(2, 3, 4)),
    "einsum_attention": Case(lambda q: np.einsum("bhqd,bhkd->bhqk", q, np.ones((2, 3, 5, 4))),
                             randn(2, 3, 2, 4)),
    "einsum_ellipsis": Case(lambda x: np.einsum("...ij,...jk->...ik", x, const(4, 3, 2)),
                            randn(5, 1, 2, 3)),
    "einsum_ellipsis_implicit": Case(lambda x: np.einsum("...i,...i", x, const(3, 4)),
                                     randn(2, 3, 4)),
    "einsum_ellipsis_middle": Case(lambda x: np.einsum("i...j->j...i", x), randn(2, 3, 4, 5)),
    "einsum_broadcast_size1": Case(lambda x: np.einsum("ij,jk", x, const(3, 4)), randn(2, 1)),
    "einsum_three": Case(lambda x: np.einsum("ij,jk,kl->il", x, B45, const(5, 2)), A34),
    "einsum_three_shared": Case(lambda x: np.einsum("ij,ij,ij->i", x, x, x), A34),
    "einsum_trace": Case(lambda x: np.einsum("ii", x), randn(3, 3)),
    "einsum_diagonal": Case(lambda x: np.einsum("ii->i", x), randn(3, 3)),
    "einsum_diagonal_batch": Case(lambda x: np.einsum("iji->ji", x), randn(3, 2, 3)),
    "einsum_scalar_operand": Case(lambda x: np.einsum(",i->i", np.float64(3.0), x), randn(4)),
    "einsum_interleaved": Case(lambda x: np.einsum(x, [0, 1], B45, [1, 2], [0, 2]), A34),
    "einsum_interleaved_ellipsis": Case(lambda x: np.einsum(x, [Ellipsis, 1], [Ellipsis]),
                                        randn(2, 3)),
    "einsum_optimize": Case(lambda x: np.einsum("ij,jk->ik", x, B45, optimize=True), A34),
    "einsum_optimize_greedy": Case(lambda x: np.einsum("ij,jk,kl", x, B45, const(5, 3),
                                                       optimize="greedy"), A34),
    "einsum_dtype": Case(lambda x: np.einsum("ij,jk", x, B45, dtype=np.float32,
                                                    casting="same_kind"), A34,
                         grad=False),
    "einsum_spaces": Case(lambda x: np.einsum(" ij , jk -> ki ", x, B45), A34),
    "einsum_ints": Case(lambda x: np.einsum("ij,jk->ik", x, np.arange(8).reshape(4, 2)),
                        RNG.integers(-5, 5, (3, 4)).astype(np.int32), grad=False),
    # tensordot, outer
    "tensordot_default": Case(lambda x: np.tensordot(x, const(3, 4, 2)), randn(2, 3, 4)),
    "tensordot_int": Case(lambda x: np.tensordot(x, const(4, 2), axes=1), randn(2, 3, 4)),
    "tensordot_zero": Case(lambda x: np.tensordot(x, const(2), axes=0), A34),
    "tensordot_lists": Case(lambda x: np.tensordot(x, Y, axes=([0, 2], [0, 1])),
                            randn(2, 3, 4)),
    "tensordot_ints_pair": Case(lambda x: np.tensordot(x, B45, axes=(1, 0)), A34),
    "tensordot_negative": Case(lambda x: np.tensordot(x, const(5, 4), axes=([-1], [-1])), A34),
    "tensordot_both": Case(lambda x, y: np.tensordot(x, y, axes=([1], [0])), A34, B45),
    "outer": Case(lambda x: np.outer(x, np.arange(3.0)), randn(4)),
    "outer_flattens": Case(lambda x: np.outer(x, x), randn(2, 3)),
    # cumsum
    "cumsum_flat": Case(lambda x: np.cumsum(x), randn(2, 3, 4)),
    "cumsum_1d": Case(lambda x: np.cumsum(x), randn(5)),
    "cumsum_axis0": Case(lambda x: np.cumsum(x, axis=0), randn(3, 4)),
    "cumsum_axis1": Case(lambda x: np.cumsum(x, axis=1), randn(2, 3, 4)),
    "cumsum_axis_last": Case(lambda x: np.cumsum(x, -1), randn(2, 3, 4)),
    "cumsum_dtype": Case(lambda x: np.cumsum(x, axis=1, dtype=np.float32), A34, grad=False),
    "cumsum_int32": Case(lambda x: np.cumsum(x, axis=0),
                         RNG.integers(-9, 9, (4, 3)).astype(np.int32), grad=False),
    "cumsum_bool": Case(lambda x: np.cumsum(x > 0, axis=1), A34, grad=False),
    # split (list results: the pieces, and a differentiable sum of them scaled)
    "split_sections": Case(lambda x: np.split(x, 2, axis=1), randn(3, 4)),
    "split_indices": Case(lambda x: np.split(x, [1, 3], axis=-1), randn(2, 5)),
    "split_indices_odd": Case(lambda x: np.split(x, [-2, 9, 1]), randn(5, 2)),
    "array_split_uneven": Case(lambda x: np.array_split(x, 3, axis=1), randn(2, 7)),
    "array_split_many": Case(lambda x: np.array_split(x, 5), randn(3)),
    "hsplit": Case(lambda x: np.hsplit(x, 2), randn(3, 4)),
    "vsplit": Case(lambda x: np.vsplit(x, [1]), randn(3, 4)),
    "split_weighted": Case(lambda x: sum((k + 1.0) * np.sum(p ** 2)
                                         for k, p in enumerate(np.array_split(x, 3, axis=1))),
                           randn(2, 7)),
    # tile, flip
    "tile_int": Case(lambda x: np.tile(x, 3), randn(2, 3)),
    "tile_tuple": Case(lambda x: np.tile(x, (2, 1)), randn(2, 3)),
    "tile_longer": Case(lambda x: np.tile(x, (2, 1, 3)), randn(2, 3)),
    "tile_shorter": Case(lambda x: np.tile(x, (2,)), randn(2, 3, 2)),
    "tile_ones": Case(lambda x: np.tile(x, (1, 1, 1)), randn(2, 3)),
    "flip_all": Case(lambda x: np.flip(x), randn(2, 3, 4)),
    "flip_axis": Case(lambda x: np.flip(x, 1), randn(2, 3, 4)),
    "flip_negative_axis": Case(lambda x: np.flip(x, axis=-1), randn(2, 3, 4)),
    "flip_axes": Case(lambda x: np.flip(x, (0, 2)), randn(2, 3, 4)),
    "fliplr": Case(lambda x: np.fliplr(x), randn(3, 4)),
    "flipud": Case(lambda x: np.flipud(x), randn(3, 4)),
    # pad
    "pad_int": Case(lambda x: np.pad(x, 2), randn(2, 3)),
    "pad_pair": Case(lambda x: np.pad(x, (1, 2)), randn(2, 3)),
    "pad_one_pair": Case(lambda x: np.pad(x, ((1, 2),)), randn(2, 3)),
    "pad_per_axis": Case(lambda x: np.pad(x, ((1, 2), (0, 0), (3, 1))), randn(2, 3, 2)),
    "pad_column": Case(lambda x: np.pad(x, [[1], [2]]), randn(2, 3)),
    "pad_constant_value": Case(lambda x: np.pad(x, 1, constant_values=7.5), randn(2, 3)),
    "pad_constant_pairs": Case(lambda x: np.pad(x, (1, 2), "constant",
                                                constant_values=((1, 2), (3, 4))), randn(2, 3)),
    "pad_int_dtype": Case(lambda x: np.pad(x, 1, constant_values=2.7),
                          RNG.integers(0, 9, (2, 3)), grad=False),
    "pad_edge": Case(lambda x: np.pad(x, ((2, 1), (0, 3)), mode="edge"), randn(2, 3)),
    "pad_reflect": Case(lambda x: np.pad(x, ((2, 1), (1, 2)), mode="reflect"), randn(3, 4)),
    "pad_reflect_wide": Case(lambda x: np.pad(x, 5, mode="reflect"), randn(3, 2)),
    "pad_symmetric": Case(lambda x: np.pad(x, ((2, 1), (1, 3)), mode="symmetric"),
                          randn(3, 4)),
    "pad_symmetric_wide": Case(lambda x: np.pad(x, 7, mode="symmetric"), randn(3, 2)),
    "pad_wrap": Case(lambda x: np.pad(x, ((4, 1), (1, 2)), mode="wrap"), randn(3, 4)),
    "pad_images": Case(lambda x: np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect"),
                       randn(2, 3, 4, 2)),
    # linalg.norm
    "norm_flat": Case(lambda x: np.linalg.norm(x), randn(2, 3, 4)),
    "norm_flat_keepdims": Case(lambda x: np.linalg.norm(x, keepdims=True), randn(2, 3, 4)),
    "norm_vector_ord1": Case(lambda x: np.linalg.norm(x, 1), randn(5)),
    "norm_vector_inf": Case(lambda x: np.linalg.norm(x, np.inf), randn(5)),
    "norm_matrix_ord1_no_axis": Case(lambda x: np.linalg.norm(x, 1), A34),
    "norm_matrix_fro_no_axis": Case(lambda x: np.linalg.norm(x, "fro"), A34),
    "norm_ints": Case(lambda x: np.linalg.norm(x, axis=1), RNG.integers(-5, 5, (3, 4)),
                      grad=False),
    "norm_float32": Case(lambda x: np.linalg.norm(x, axis=0), A34.astype(np.float32),
                         grad=False),
    **{f"norm_vector_{o}": Case(lambda x, o=o: np.linalg.norm(x, ord=o, axis=1), randn(2, 3, 4),
                                grad=o != 0)
       for o in (None, 2, 1, np.inf, -np.inf, 0, 3, 0.5, -1.5)},
    **{f"norm_vector_{o}_keepdims": Case(lambda x, o=o: np.linalg.norm(x, o, -1, True),
                                         randn(2, 3, 4))
       for o in (None, 1, np.inf, 4)},
    **{f"norm_matrix_{o}": Case(lambda x, o=o: np.linalg.norm(x, ord=o, axis=(2, 0)),
                                randn(2, 3, 4))
       for o in (None, "fro", 1, -1, np.inf, -np.inf)},
    **{f"norm_matrix_{o}_keepdims": Case(lambda x, o=o: np.linalg.norm(x, o, (0, 1), True),
                                         randn(2, 3, 4))
       for o in (None, 1, -np.inf)},
    # take_along_axis
    "take_along_const": Case(lambda x: np.take_along_axis(x, IDX, axis=1), randn(2, 3, 4)),
    "take_along_traced": Case(lambda x, i: np.take_along_axis(x, i, axis=1),
                              randn(2, 3, 4), IDX),
    "take_along_last": Case(lambda x, i: np.take_along_axis(x, i, -1), randn(3, 4),
                            RNG.integers(-4, 4, (3, 6))),
    "take_along_broadcast": Case(lambda x, i: np.take_along_axis(x, i, axis=0),
                                 randn(4, 1, 3), RNG.integers(0, 4, (2, 5, 1))),
    "take_along_none": Case(lambda x, i: np.take_along_axis(x, i, axis=None), randn(2, 3),
                            RNG.integers(-6, 6, (7,))),
    "take_along_uint": Case(lambda x, i: np.take_along_axis(x, i, axis=0), randn(4, 3),
                            RNG.integers(0, 4, (2, 3)).astype(np.uint8)),
    "take_along_argmax": Case(lambda x: np.take_along_axis(
        x, np.argmax(x, axis=1, keepdims=True), axis=1), randn(3, 5)),
    "take_along_argsort_like": Case(lambda x: np.take_along_axis(x, np.flip(
        np.argmin(x, axis=0, keepdims=True), 1), axis=0), randn(4, 3)),
    # argmax / argmin
    "argmax_flat": Case(lambda x: np.argmax(x), randn(3, 4), grad=False),
    "argmax_axis": Case(lambda x: np.argmax(x, axis=1), randn(3, 4, 2), grad=False),
    "argmax_keepdims": Case(lambda x: np.argmax(x, axis=-1, keepdims=True), randn(3, 4),
                            grad=False),
    "argmax_none_keepdims": Case(lambda x: np.argmax(x, keepdims=True), randn(3, 4),
                                 grad=False),
    "argmax_ties": Case(lambda x: np.argmax(x, axis=1),
                        np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0], [0.0, -1.0, 0.0]]),
                        grad=False),
    "argmax_nan": Case(lambda x: np.argmax(x, axis=1),
                       np.array([[1.0, np.nan, 3.0, np.nan], [5.0, 1.0, 2.0, 0.0]]),
                       grad=False),
    "argmax_ints": Case(lambda x: np.argmax(x, axis=0), RNG.integers(0, 3, (5, 4)),
                        grad=False),
    "argmax_bool": Case(lambda x: np.argmax(x > 0.5, axis=0), randn(5, 4), grad=False),
    "argmin_flat": Case(lambda x: np.argmin(x), randn(3, 4), grad=False),
    "argmin_axis": Case(lambda x: np.argmin(x, 0), randn(3, 4), grad=False),
    "argmin_keepdims": Case(lambda x: np.argmin(x, axis=1, keepdims=True), randn(3, 4),
                            grad=False),
    "argmin_ties": Case(lambda x: np.argmin(x, axis=1),
                        np.array([[1.0, 0.0, 0.0], [2.0, 2.0, 2.0]]), grad=False),
    "argmin_nan": Case(lambda x: np.argmin(x), np.array([1.0, np.nan, -3.0, np.nan]),
                       grad=False),
    "argmin_uint": Case(lambda x: np.argmin(x, axis=1),
                        RNG.integers(0, 3, (4, 5)).astype(np.uint8), grad=False),
    "argmin_bool": Case(lambda x: np.argmin(x > 0, axis=1), randn(4, 5), grad=False),
}


def _leaves(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def one_output(case):
    """The case's function with list results (split's pieces) raveled into one array."""
    if not isinstance(case.f(*case.inputs), list):
        return case.f
    return lambda *xs: np.concatenate([np.ravel(p) for p in case.f(*xs)])


@pytest.mark.parametrize("name", list(CASES))
def test_values_shapes_and_dtypes_are_numpys(name):
    case = CASES[name]
    model = flux.net(case.f)
    want = case.f(*case.inputs)
    got = model(*case.inputs)
    assert isinstance(got, list) == isinstance(want, list)
    assert len(_leaves(got)) == len(_leaves(want))
    for g, w in zip(_leaves(got), _leaves(want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, g.dtype, w.shape, w.dtype)
        np.testing.assert_allclose(g, w, rtol=1e-5 if w.dtype == np.float32 else 1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_the_graph_is_primitives_and_runs_on_new_values(name):
    """The function is traced, not folded into a constant or computed by NumPy outside the
    graph: the graph has equations of the closed primitive set, and a second call on other
    values (the same shapes: the same graph) gives NumPy's answer for those."""
    case = CASES[name]
    model = flux.net(case.f)
    graph = flux.compile(model).graph(*case.inputs)
    assert graph.eqns
    assert {e.prim for e in graph.eqns} <= set(P.PRIMITIVES)
    produced = {id(v) for e in graph.eqns for v in e.outputs}
    assert all(id(o) in produced for o in graph.outputs if not isinstance(o, flux.ir.Literal)
               and o not in graph.inputs)
    x = case.inputs[0]
    other = (x[::-1].copy() if x.dtype.kind not in "f" else x * 1.5 - 0.25,) + case.inputs[1:]
    for g, w in zip(_leaves(model(*other)), _leaves(case.f(*other))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-12)


GRAD_CASES = [name for name, case in CASES.items()
              if case.grad and case.inputs[0].dtype == np.float64]


@pytest.mark.parametrize("name", GRAD_CASES)
def test_input_gradients_match_finite_differences(name):
    case = CASES[name]
    f = one_output(case)
    model = flux.net(f)
    x, rest = case.inputs[0], case.inputs[1:]
    out = np.asarray(f(x, *rest))
    delta = RNG.standard_normal(out.shape)
    grads = flux.back(model, delta, x, *rest)
    want = finite_differences(lambda x64: float(np.sum(delta * f(x64, *rest))), x)[0]
    assert grads[0].dtype == np.float64
    assert_grads_close(grads[0], want)
    if len(rest) == 1 and rest[0].dtype == np.float64:       # both operands traced
        want = finite_differences(lambda y64: float(np.sum(delta * f(x, y64))), rest[0])[0]
        assert_grads_close(grads[1], want)


def test_cumsum_of_long_axes_and_ties_in_argmax_follow_numpy():
    x = randn(3, 200)
    np.testing.assert_allclose(flux.net(lambda x: np.cumsum(x, axis=1))(x), np.cumsum(x, 1),
                               rtol=1e-10, atol=1e-10)
    ties = np.zeros((4, 6))
    ties[:, 3:] = 1
    assert flux.net(lambda x: np.argmax(x, axis=1))(ties).tolist() == [3, 3, 3, 3]
    assert flux.net(lambda x: np.argmin(x))(ties) == 0


def test_linalg_norm_is_reached_through_numpys_dispatch():
    assert dispatch.FUNCTIONS[np.linalg.norm] is norms.norm
    graph = flux.compile(flux.net(lambda x: np.linalg.norm(x, axis=-1))).graph(randn(2, 3))
    assert {e.prim for e in graph.eqns} == {P.mul_p, P.reduce_sum_p, P.sqrt_p}


def test_einsum_contracts_with_one_matmul_per_pair():
    graph = flux.compile(flux.net(lambda x: np.einsum("bij,bjk->bik", x, Y))).graph(
        randn(2, 3, 4))
    assert [e.prim for e in graph.eqns] == [P.matmul_p]
    graph = flux.compile(flux.net(lambda x: np.einsum("ij,jk,kl->il", x, B45, B45.T))).graph(
        A34)
    assert [e.prim for e in graph.eqns].count(P.matmul_p) == 2


@flux.net
class Bilinear:
    """xᵀ W x for each row x, with einsum."""
    W: flux.Param

    def __init__(self, n):
        self.W = flux.param(RNG.standard_normal((n, n)), dtype=np.float64)

    def __call__(self, x):
        return np.einsum("bi,ij,bj->b", x, self.W, x)


def test_einsum_on_a_param_gives_its_gradient():
    model, x = Bilinear(3), randn(4, 3)
    W = model.W.value
    np.testing.assert_allclose(model(x), np.sum((x @ W) * x, axis=1), rtol=1e-12)
    delta = randn(4)
    (dx,) = flux.back(model, delta, x)
    np.testing.assert_allclose(model.W.grad, np.einsum("b,bi,bj->ij", delta, x, x),
                               rtol=1e-12)
    np.testing.assert_allclose(dx, delta[:, None] * (x @ (W + W.T)), rtol=1e-12)


def test_a_layer_then_numpy_functions_trains():
    a = flux.Affine(4, 6)
    model = flux.Chain(a, lambda h: np.linalg.norm(np.pad(np.cumsum(h, axis=1), ((0, 0), (0, 1))),
                                                   axis=1, keepdims=True))
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    h = x @ a.W.value + a.b.value
    np.testing.assert_allclose(model(x)[:, 0], np.linalg.norm(np.cumsum(h, 1), axis=1),
                               rtol=1e-5)
    flux.back(model, np.ones((5, 1), np.float32), x)
    assert np.all(np.isfinite(a.W.grad)) and np.any(a.W.grad != 0)


# -- what cannot be translated ---------------------------------------------------------------


def test_boolean_mask_indexing_of_a_traced_value_says_the_shape_depends_on_the_data():
    model = flux.net(lambda x: np.sum(x[x > 0]))
    with pytest.raises(flux.TraceError) as info:
        model(randn(3, 4))
    message = str(info.value)
    assert "shape would depend on the data" in message
    assert "np.where(mask, x, 0)" in message
    assert __file__ in message or "test_numpy_functions.py" in message
    np.testing.assert_allclose(flux.net(lambda x: np.sum(np.where(x > 0, x, 0)))(A34),
                               np.sum(A34[A34 > 0]))
    mask = A34 > 0       # a constant mask is static indexing, and works
    np.testing.assert_allclose(flux.net(lambda x: x[mask])(A34), A34[mask])


def test_traced_integer_indices_point_to_take():
    with pytest.raises(flux.TraceError, match="np.take"):
        flux.net(lambda x, i: x[i])(A34, np.array([0, 2]))


ERRORS = {
    "einsum_operands": (lambda x: np.einsum("ij,jk", x), flux.FluxValueError, "2 operands"),
    "einsum_letters": (lambda x: np.einsum("i1->i", x), flux.FluxValueError, "not a letter"),
    "einsum_rank": (lambda x: np.einsum("ijk->i", x), flux.ShapeError, "name 3"),
    "einsum_sizes": (lambda x: np.einsum("ij,ij->i", x, const(3, 5)), flux.ShapeError,
                     "label 'j'"),
    "einsum_output": (lambda x: np.einsum("ij->k", x), flux.FluxValueError, "'k'"),
    "einsum_out": (lambda x: np.einsum("ij", x, out=np.zeros((3, 4))), flux.TraceError,
                   "out="),
    "tensordot_axes": (lambda x: np.tensordot(x, B45, axes="x"), flux.FluxValueError, "axes"),
    "tensordot_sizes": (lambda x: np.tensordot(x, B45, axes=([0], [0])), flux.ShapeError,
                        "size"),
    "cumsum_axes": (lambda x: np.cumsum(x, axis=(0, 1)), flux.FluxValueError, "axis"),
    "split_unequal": (lambda x: np.split(x, 3, axis=1), flux.FluxValueError,
                      "indices_or_sections"),
    "split_bad": (lambda x: np.split(x, [0.5]), flux.FluxValueError, "indices_or_sections"),
    "tile_negative": (lambda x: np.tile(x, -1), flux.FluxValueError, "reps"),
    "pad_mode": (lambda x: np.pad(x, 1, mode="median"), flux.FluxValueError, "mode='median'"),
    "pad_width": (lambda x: np.pad(x, ((1, 2), (3, 4), (5, 6))), flux.FluxValueError,
                  "pad_width"),
    "pad_negative": (lambda x: np.pad(x, -1), flux.FluxValueError, "pad_width"),
    "pad_float_width": (lambda x: np.pad(x, 1.5), flux.FluxValueError, "pad_width"),
    "pad_option": (lambda x: np.pad(x, 1, mode="edge", constant_values=1),
                   flux.FluxValueError, "constant_values"),
    "pad_odd": (lambda x: np.pad(x, 1, mode="reflect", reflect_type="odd"),
                flux.FluxValueError, "reflect_type"),
    "norm_nuclear": (lambda x: np.linalg.norm(x, "nuc"), flux.TraceError, "singular values"),
    "norm_spectral": (lambda x: np.linalg.norm(x, 2, axis=(0, 1)), flux.TraceError, "SVD"),
    "norm_vector_ord": (lambda x: np.linalg.norm(x, "fro", axis=0), flux.FluxValueError,
                        "ord='fro'"),
    "norm_axes": (lambda x: np.linalg.norm(x, axis=(0, 1, 0)), flux.FluxValueError, "axis"),
    "norm_rank": (lambda x: np.linalg.norm(x[None], 1), flux.FluxValueError, "ord=1"),
    "take_along_rank": (lambda x: np.take_along_axis(x, np.array([0]), axis=0),
                        flux.ShapeError, "same number of axes"),
    "take_along_range": (lambda x: np.take_along_axis(x, np.array([[5]]), axis=1),
                         flux.FluxValueError, "index 5"),
    "take_along_float": (lambda x: np.take_along_axis(x, x, axis=1), flux.FluxValueError,
                         "integers"),
    "argmax_tuple_axis": (lambda x: np.argmax(x, axis=(0, 1)), flux.FluxValueError, "axis"),
    "argmax_out": (lambda x: np.argmax(x, out=np.zeros(4, np.int64)), flux.TraceError, "out="),
}


@pytest.mark.parametrize("name", list(ERRORS))
def test_unsupported_arguments_are_flux_errors_naming_them(name):
    f, kind, words = ERRORS[name]
    with pytest.raises(kind) as info:
        flux.net(f)(A34)
    assert words in str(info.value)


def test_traced_take_along_axis_indices_out_of_range_fail_when_run():
    model = flux.net(lambda x, i: np.take_along_axis(x, i, axis=1))
    with pytest.raises(flux.BackendError, match="out of range"):
        model(A34, np.array([[7], [0], [1]]))     # (not row 1's element 3: 4 + 3 = 7)
    with pytest.raises(flux.BackendError, match="out of range"):
        model(A34, np.array([[0], [-5], [1]]))


def check_on_backend(name: str, compile) -> None:
    """Case `name` compiled with `compile` (``flux.tf``, ``flux.mxnet``) gives the NumPy
    backend's values, dtypes and `flux.back` input gradients (tests/tf, tests/mxnet use it)."""
    case = CASES[name]
    model = flux.net(one_output(case))
    compiled = compile(model)
    want = model(*case.inputs)
    got = compiled(*case.inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5 if want.dtype == np.float32 else 1e-10,
                               atol=1e-10)
    if name in GRAD_CASES:
        delta = np.random.default_rng(1).standard_normal(want.shape)
        for g, w in zip(flux.back(compiled, delta, *case.inputs),
                        flux.back(model, delta, *case.inputs)):
            if np.asarray(w).dtype.kind == "f":
                np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)
