"""`flux.backends.free_batch`: one graph for every batch size, or an error at the user's line;
and `flux.backends.input_shape`, the point shape a model determines."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, net, unroll
from flux.backends import abstract_inputs, free_batch, input_shape
from flux.ir import primitives as P


def generic(model, *shapes):
    model, avals, tree = abstract_inputs(model, shapes, "test")
    return free_batch(model, avals, tree, "test")


def test_the_batch_axis_is_marked_on_every_value_and_shape_attribute():
    m = unroll(Chain(flux.LSTM(3, 4), Affine(4, 2)), 5, stateful=False)
    fb = generic(m, (1, 5, 3))
    g = fb.graph
    assert fb.shape(g.inputs[0]) == (None, 5, 3)
    assert fb.shape(g.outputs[0]) == (None, 5, 2)
    for p in g.param_vars:
        assert fb.axes(p) == ()
    # the zero initial states are broadcast to the batch by an equation, not a constant
    grown = [e for e in g.eqns if e.prim is P.broadcast_to_p and fb.attr_axes(e, "shape")]
    assert grown and all(fb.attr_axes(e, "shape") == (0,) for e in grown)
    assert all(np.size(v) <= 4 for v in g.const_values)


def test_an_index_with_arrays_in_it_is_compared_as_an_index():
    """x[:, [0, 2]] keeps an integer array in its index attribute: it is the same at every
    batch size (it was once compared as if it were a size)."""
    fb = generic(net(lambda x: x[:, np.array([0, 2])] * 2), (1, 3))
    assert fb.shape(fb.graph.outputs[0]) == (None, 2)


def test_a_batch_that_is_not_axis_zero_of_every_value():
    @net
    def f(x):
        return (x.T @ x).sum(0) + x[:, 1:2].reshape(1, -1).sum()   # (F, F): no batch axis

    fb = generic(f, (7, 3))
    assert fb.shape(fb.graph.outputs[0]) == (3,)
    transposed = next(e for e in fb.graph.eqns if e.prim is P.transpose_p)
    assert fb.axes(transposed.outputs[0]) == (1,)


@pytest.mark.parametrize("body, why", [
    (lambda x: x - np.mean(x, axis=0), "a mean or count over the batch"),
    (lambda x: x.reshape(-1), "other than by its batch axis"),
    (lambda x: sum(x[i] for i in range(x.shape[0])), "the number of equations changes"),
    (lambda x: x + np.arange(x.shape[0])[:, None], "constant"),
])
def test_graphs_that_depend_on_the_batch_size_are_refused_at_the_users_line(body, why):
    model = net(body)
    with pytest.raises(flux.FluxValueError, match="not the same for every batch size") as info:
        generic(model, (4, 3))
    assert why in str(info.value)
    if "equations" not in why and "constant" not in why:
        assert info.value.trace and info.value.trace[0].file == __file__


def test_no_batch_axis_is_refused():
    with pytest.raises(flux.FluxValueError, match="no input has a batch axis"):
        generic(net(lambda x: x * 2), ())


def test_input_shape_from_the_model_where_it_determines_one():
    assert input_shape(Affine(10, 3)) == (10,)
    assert input_shape(Chain(Affine(10, 3), flux.relu)) == (10,)
    assert input_shape(Chain(flux.relu, Affine(10, 3))) is None       # a function first
    assert input_shape(unroll(flux.GRU(4, 2), 6)) == (6, 4)
    assert input_shape(unroll(flux.LSTM(4, 2), 6, seq=False)) == (4,)
    assert input_shape(flux.unroll1(flux.Recurrent(5, 2))) == (5,)
    assert input_shape(flux.compile(Affine(2, 3), "numpy")) == (2,)
    assert input_shape(net(lambda x: x)) is None


def test_constants_are_still_folded_when_they_do_not_grow():
    @net
    def f(x):
        return x + np.exp(np.ones(3, np.float32)) * 2

    g = generic(f, (2, 3)).graph
    assert [e.prim for e in g.eqns] == [P.add_p]
