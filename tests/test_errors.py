"""Errors users can cause: each is a FluxError (and the matching built-in class), says what was
expected and what was found, and points at the model and the user's line."""
import os

import numpy as np
import pytest

import flux
from flux import Affine, Chain, net, softmax, σ
from helpers import AFFINE_FILE, affine_line, line_of as _line_of


HERE = os.path.abspath(__file__)


def line_of(marker, path=None):
    """The line of this file (or `path`) holding the comment ``# <marker>``."""
    return _line_of(marker, path or HERE)


@net
class TLP:
    first: object
    second: object

    def __call__(self, x):
        l1 = σ(self.first(x))  # tlp-l1
        l2 = softmax(self.second(l1))  # tlp-l2
        return l2


# -- shape errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 11), (4, 11), (11,)], ids=["(1, 11)", "(4, 11)", "(11,)"])
def test_wrong_input_width_is_a_shape_error_naming_both_shapes_and_the_line(shape):
    a = Affine(10, 20)
    with pytest.raises(flux.ShapeError) as info:
        a(np.ones(shape))
    error = info.value
    assert isinstance(error, flux.FluxError) and isinstance(error, ValueError)
    message = str(error)
    assert str(shape) in message                     # what was found
    assert "(10, 20)" in message                     # what it must fit
    assert "11" in message and "10" in message
    assert [(f.model, f.path, os.path.abspath(f.file), f.line) for f in error.trace] == \
        [("Affine", "", AFFINE_FILE, affine_line())]
    assert f"affine.py:{affine_line()}" in message


def test_tlp_shape_error_trace_is_the_contracts():
    model = TLP(Affine(10, 20), Affine(21, 15))
    with pytest.raises(flux.ShapeError) as info:
        model(np.random.rand(1, 10))
    error = info.value
    assert isinstance(error, ValueError)
    assert "(1, 20)" in str(error) and "(21, 15)" in str(error)
    inner, outer = error.trace
    assert isinstance(inner, flux.Frame) and isinstance(outer, flux.Frame)
    assert (inner.model, inner.path, inner.line) == ("Affine", "second", affine_line())
    assert inner.file.endswith("affine.py")
    assert os.path.abspath(inner.file) == AFFINE_FILE
    assert (outer.model, outer.path, outer.file, outer.line) == ("TLP", "", HERE, line_of("tlp-l2"))
    lines = str(error).splitlines()
    assert f"in Affine (second) at {inner.file}:{affine_line()}" in lines[-2]
    assert lines[-1].strip() == f"in TLP at {HERE}:{line_of('tlp-l2')}"


def test_tlp_shape_error_on_a_single_point_has_the_same_trace():
    model = TLP(Affine(10, 20), Affine(21, 15))
    with pytest.raises(flux.ShapeError) as info:
        model(np.random.rand(10))
    assert [(f.model, f.path, f.line) for f in info.value.trace] == \
        [("Affine", "second", affine_line()), ("TLP", "", line_of("tlp-l2"))]
    assert "21" in str(info.value) and "20" in str(info.value)


def test_shape_error_is_raised_before_any_backend_runs():
    model = Chain(Affine(10, 20), Affine(21, 15))
    compiled = flux.compile(model, "numpy")
    with pytest.raises(flux.ShapeError) as info:
        compiled.graph(np.zeros((1, 10), np.float32))     # tracing alone finds it
    assert [(f.model, f.path) for f in info.value.trace] == [("Affine", "layers.1"), ("Chain", "")]
    with pytest.raises(flux.ShapeError):
        flux.compile(model, "numpy", (1, 10))             # example shapes are traced at once


def test_shape_error_in_user_code_names_the_users_line():
    @net
    def bad(x):
        y = np.tanh(x)
        return y + np.ones(4)  # bad-broadcast

    with pytest.raises(flux.ShapeError) as info:
        bad(np.ones((2, 3)))
    error = info.value
    assert "(2, 3)" in str(error) and "(4,)" in str(error)
    assert [(f.model, f.file, f.line) for f in error.trace] == \
        [("bad", HERE, line_of("bad-broadcast"))]
    assert f"{HERE}:{line_of('bad-broadcast')}" in str(error)


SHAPE_MISTAKES = {
    # case: (forward on a (2, 3) input, words the message must hold)
    "reshape": (lambda x: np.reshape(x, (-1, 4)), ["(2, 3)", "(-1, 4)"]),
    "sum axis": (lambda x: np.sum(x, axis=3), ["axis 3", "2 axes"]),
    "concatenate": (lambda x: np.concatenate([x, x.T]), ["(2, 3)", "(3, 2)"]),
    "index": (lambda x: x[5], ["[5]", "(2, 3)"]),
}


@pytest.mark.parametrize("case", list(SHAPE_MISTAKES))
def test_shape_errors_from_numpy_functions_carry_the_trace(case):
    forward, words = SHAPE_MISTAKES[case]
    with pytest.raises(flux.ShapeError) as info:
        net(forward)(np.ones((2, 3)))
    error = info.value
    for word in words:
        assert word in str(error)
    line = forward.__code__.co_firstlineno
    assert [(f.file, f.line) for f in error.trace] == [(HERE, line)]


# -- type errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad,found", [("hello", "str"), (["a", "b"], "str"),
                                       (object(), "object")], ids=["str", "list of str", "object"])
def test_non_numeric_input_is_a_type_error(bad, found):
    a = Affine(2, 2)
    with pytest.raises(flux.FluxError) as info:
        a(bad)
    error = info.value
    assert isinstance(error, TypeError)
    assert "numeric" in str(error)                       # what was expected
    assert found in str(error)                           # what was found


@pytest.mark.parametrize("make", [
    lambda: Affine(5),
    lambda: flux.param(["a", "b"]),
    lambda: net(5),
], ids=["Affine(5)", "param of str", "net(5)"])
def test_constructor_misuse_is_a_flux_type_error(make):
    with pytest.raises(flux.FluxError) as info:
        make()
    assert isinstance(info.value, TypeError)


def test_keyword_inputs_to_a_model_are_a_type_error():
    with pytest.raises(flux.FluxError) as info:
        Affine(2, 2)(x=np.ones(2))
    assert isinstance(info.value, TypeError)
    assert "x" in str(info.value)


# -- what a dataflow graph cannot record -----------------------------------------------------------


def test_data_dependent_if_is_a_trace_error_naming_the_line():
    @net
    class Branchy:
        W: flux.Param

        def __call__(self, x):
            y = x @ self.W
            if y.sum() > 0:  # data-dependent-if
                return y
            return -y

    with pytest.raises(flux.TraceError) as info:
        Branchy(np.ones((3, 3)))(np.ones(3))
    error = info.value
    assert isinstance(error, flux.FluxError) and isinstance(error, TypeError)
    message = str(error)
    assert "if" in message and "traced value" in message
    assert "np.where" in message                          # what to do instead
    assert f"{HERE}:{line_of('data-dependent-if')}" in message
    assert [(f.model, f.line) for f in error.trace] == [("Branchy", line_of("data-dependent-if"))]


def test_data_dependent_while_and_float_are_trace_errors():
    @net
    def loop(x):
        while x.sum() > 0:  # data-dependent-while
            x = x - 1
        return x

    with pytest.raises(flux.TraceError) as info:
        loop(np.ones(3))
    assert f"{HERE}:{line_of('data-dependent-while')}" in str(info.value)

    @net
    def to_float(x):
        return x * float(x[0])  # float-of-traced

    with pytest.raises(flux.TraceError) as info:
        to_float(np.ones(3))
    assert "float()" in str(info.value)
    assert f"{HERE}:{line_of('float-of-traced')}" in str(info.value)


def test_shape_dependent_control_flow_is_fine():
    @net
    def by_rank(x):
        if x.ndim == 1:
            return x * 2
        return x.sum(axis=1)

    np.testing.assert_allclose(by_rank(np.ones(3)), [2, 2, 2])
    np.testing.assert_allclose(by_rank(np.ones((2, 3))), [3, 3])


@pytest.mark.parametrize("name,forward", [
    ("fft", lambda x: np.fft.fft(x)),
    ("argsort", lambda x: np.argsort(x)),
    ("sort", lambda x: np.sort(x)),
    ("cumprod", lambda x: np.cumprod(x)),
    ("arctan2", lambda x: np.arctan2(x, x)),
])
def test_numpy_function_without_translation_names_function_and_line(name, forward):
    model = net(forward)
    with pytest.raises(flux.FluxError) as info:
        model(np.ones((2, 3)))
    error = info.value
    assert isinstance(error, TypeError)
    message = str(error)
    assert name in message
    assert "no IR translation" in message
    line = forward.__code__.co_firstlineno
    assert [(f.file, f.line) for f in error.trace] == [(HERE, line)]
    assert f"{HERE}:{line}" in message


def test_untranslatable_submodule_function_is_named_with_its_module():
    model = net(lambda x: np.fft.fft(x))
    with pytest.raises(flux.TraceError) as info:
        model(np.ones(4))
    assert "np.fft.fft" in str(info.value)


def test_item_assignment_on_a_traced_value_is_a_clear_error():
    @net
    def overwrite(x):
        y = x * 2
        y[0] = 1.0  # item-assignment
        return y

    with pytest.raises(flux.TraceError) as info:
        overwrite(np.ones(3))
    error = info.value
    assert isinstance(error, TypeError)
    assert "item assignment" in str(error)
    assert "np.where" in str(error) or "new value" in str(error)
    assert [(f.model, f.file, f.line) for f in error.trace] == \
        [("overwrite", HERE, line_of("item-assignment"))]
    assert f"{HERE}:{line_of('item-assignment')}" in str(error)


def _escaped_value():
    kept = []

    @net
    def leaky(x):
        y = x * 2
        kept.append(y)
        return y

    leaky(np.ones(3))
    return kept[0]


@pytest.mark.parametrize("use", [lambda v: v + 1, lambda v: np.exp(v), lambda v: flux.σ(v)],
                         ids=["operator", "numpy", "flux function"])
def test_a_traced_value_used_outside_its_model_is_a_clear_error(use):
    escaped = _escaped_value()
    with pytest.raises(flux.TraceError) as info:
        use(escaped)
    assert "outside the model" in str(info.value)


def test_a_traced_value_passed_to_another_model_later_is_a_clear_error():
    escaped = _escaped_value()
    with pytest.raises(flux.TraceError) as info:
        Affine(3, 3)(escaped)
    assert "outside the model" in str(info.value)


def test_a_model_with_a_print_only_prints_while_tracing():
    printed = []

    @net
    def noisy(x):
        printed.append(repr(x))            # side effects see traced values, not data
        return x + 1

    np.testing.assert_allclose(noisy(np.zeros(2)), [1, 1])
    np.testing.assert_allclose(noisy(np.ones(2)), [2, 2])
    assert len(printed) == 1 and "(2,)" in printed[0]


# -- backends ------------------------------------------------------------------------------------


def test_unknown_backend_lists_the_installed_ones():
    with pytest.raises(flux.BackendNotInstalled) as info:
        flux.compile(Affine(2, 2), backend="nope")
    error = info.value
    assert isinstance(error, flux.FluxError) and isinstance(error, ImportError)
    message = str(error)
    assert "'nope'" in message
    for name in flux.backends():
        assert name in message
    assert "numpy" in message


def test_missing_shipped_backend_says_what_to_pip_install():
    if "mxnet" in flux.backends():
        pytest.skip("flux-mxnet is installed here, so flux.mxnet works")
    with pytest.raises(flux.BackendNotInstalled) as info:
        flux.mxnet(Affine(2, 2))
    assert isinstance(info.value, ImportError)
    assert "pip install flux-mxnet" in str(info.value)


@pytest.mark.parametrize("name,package", [("tf", "flux-tf"), ("cupy", "flux-cupy")])
def test_shorthands_always_exist(name, package):
    shorthand = getattr(flux, name)
    assert callable(shorthand)
    if name in flux.backends():
        pytest.skip(f"{package} is installed here")
    with pytest.raises(flux.BackendNotInstalled) as info:
        shorthand(Affine(2, 2))
    assert f"pip install {package}" in str(info.value)


def test_compiling_something_that_is_not_a_model():
    with pytest.raises(flux.FluxError) as info:
        flux.compile(42, "numpy")
    assert "int" in str(info.value)


# -- the error classes ---------------------------------------------------------------------------


def test_error_class_hierarchy():
    assert issubclass(flux.ShapeError, flux.FluxError) and issubclass(flux.ShapeError, ValueError)
    assert issubclass(flux.TraceError, flux.FluxError) and issubclass(flux.TraceError, TypeError)
    assert issubclass(flux.BackendError, flux.FluxError)
    assert issubclass(flux.BackendNotInstalled, flux.FluxError)
    assert issubclass(flux.BackendNotInstalled, ImportError)


def test_error_str_shows_the_cause_then_the_frames():
    frames = [flux.Frame("Affine", "second", "/x/affine.py", 8),
              flux.Frame("TLP", "", "/y/m.py", 3)]
    error = flux.ShapeError("shapes (1, 20) and (21, 15)", frames)
    assert str(error).splitlines() == ["shapes (1, 20) and (21, 15)",
                                       "  in Affine (second) at /x/affine.py:8",
                                       "  in TLP at /y/m.py:3"]
    assert error.trace == frames
