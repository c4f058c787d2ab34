"""Recurrence: State fields and `prev`, the built-in cells (Recurrent, GRU, LSTM) and models
containing them, unrolled and checked against NumPy loops of each cell's equations (values) and
float64 central finite differences (gradients through the whole unrolled sequence)."""
import numpy as np
import pytest

import flux
from flux import Affine, Chain, hcat, net, prev, softmax, tanh, unroll, σ
from helpers import (check_back, gru_cell, line_of, lstm_cell, np_params, np_sigmoid,
                     np_softmax, np_unroll, randomize, rnn_cell, under)

IN, OUT, N, BATCH = 3, 4, 4, 2


def sequence(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def zeros(n_states, out=OUT):
    return [np.zeros(out)] * n_states


# -- user-written recurrent layers ------------------------------------------------------------


@net
class Recurrent:
    Wxy: flux.Param; Wyy: flux.Param; by: flux.Param  # noqa: E702  (the contract's example)
    y: flux.State                    # a recurrent variable; its field value is the initial state
    def __call__(self, x):
        self.y = tanh(x @ self.Wxy + flux.prev(self.y) @ self.Wyy + self.by)
        return self.y


def user_recurrent(seed=0, y0=None):
    r = np.random.default_rng(seed)
    return Recurrent(0.5 * r.standard_normal((IN, OUT)), 0.5 * r.standard_normal((OUT, OUT)),
                     0.5 * r.standard_normal(OUT),
                     np.zeros(OUT, np.float32) if y0 is None else y0)


def test_the_contracts_recurrent_example_unrolls_to_the_rnn_equations():
    m = user_recurrent()
    assert list(flux.params(m)) == ["Wxy", "Wyy", "by"]     # the State is not a Param
    x = sequence(BATCH, N, IN)
    want, _ = np_unroll(rnn_cell, np_params(m), x, zeros(1))
    np.testing.assert_allclose(unroll(m, N, stateful=False)(x), want, rtol=1e-5, atol=1e-6)


def test_the_contracts_recurrent_example_matches_the_built_in_recurrent():
    m = user_recurrent(seed=3)
    built_in = flux.Recurrent(IN, OUT)
    for name in ("Wxy", "Wyy", "by"):
        getattr(built_in, name).value = np.array(getattr(m, name).value)
    x = sequence(BATCH, N, IN)
    np.testing.assert_allclose(unroll(m, N, stateful=False)(x),
                               unroll(built_in, N, stateful=False)(x), rtol=1e-6, atol=1e-7)


def test_the_contracts_recurrent_example_gradients_match_finite_differences():
    u = unroll(user_recurrent(seed=4), N, stateful=False)
    check_back(u, sequence(BATCH, N, IN, seed=5),
               lambda p, x: np_unroll(rnn_cell, under(p, "model"), x, zeros(1))[0])


@net
class Delay2:
    """y_t = v_{t-2}, with v_t = x_t: the input two steps back (v's initial value before)."""
    v: flux.State

    def __call__(self, x):
        out = prev(self.v, 2)
        self.v = x
        return out


@pytest.mark.parametrize("shape", [(BATCH, 5, IN), (5, IN)], ids=["batch", "single"])
def test_prev_n_is_the_value_n_steps_back_and_the_initial_state_before_the_start(shape):
    x = sequence(*shape)
    v0 = np.array([7.0, 8.0, 9.0], np.float32)
    out = unroll(Delay2(v0), 5, stateful=False)(x)
    assert out.shape == shape
    steps = np.moveaxis(out, -2, 0)                    # (time, [batch,] features)
    xs = np.moveaxis(x, -2, 0)
    np.testing.assert_array_equal(steps[0], np.broadcast_to(v0, steps[0].shape))
    np.testing.assert_array_equal(steps[1], np.broadcast_to(v0, steps[1].shape))
    np.testing.assert_array_equal(steps[2:], xs[:3])


@net
class Accumulate:
    """s_t = s_{t-1} + x_t; returns s_t − s_{t-1} (= x_t) and s_t."""
    s: flux.State

    def __call__(self, x):
        self.s = prev(self.s) + x
        return self.s - prev(self.s), self.s


def test_a_state_read_after_assignment_is_this_steps_value_and_prev_still_the_last():
    x = sequence(BATCH, N, IN)
    diff, total = unroll(Accumulate(np.zeros(IN, np.float32)), N, stateful=False)(x)
    np.testing.assert_allclose(diff, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, np.cumsum(x, axis=1), rtol=1e-5, atol=1e-6)


# -- the built-in cells -----------------------------------------------------------------------


CELLS = {"Recurrent": (flux.Recurrent, rnn_cell, 1),
         "GRU": (flux.GRU, gru_cell, 1),
         "LSTM": (flux.LSTM, lstm_cell, 2)}


def cell_oracle(name, prefix="model"):
    _, cell, n_states = CELLS[name]
    return lambda p, x: np_unroll(cell, under(p, prefix), x, zeros(n_states))[0]


def test_built_in_cells_have_the_contracts_field_names_and_states():
    assert list(flux.params(flux.Recurrent(IN, OUT))) == ["Wxy", "Wyy", "by"]
    assert list(flux.params(flux.GRU(IN, OUT))) == [
        "Wxr", "Wyr", "br", "Wxu", "Wyu", "bu", "Wxh", "Wyh", "bh"]
    assert list(flux.params(flux.LSTM(IN, OUT))) == [
        "Wxf", "Wyf", "bf", "Wxi", "Wyi", "bi", "Wxo", "Wyo", "bo", "Wxc", "Wyc", "bc"]
    assert flux.GatedRecurrent is flux.GRU
    lstm = flux.LSTM(IN, OUT)
    assert lstm.Wxf.shape == (IN, OUT) and lstm.Wyf.shape == (OUT, OUT) and lstm.bf.shape == (OUT,)
    for state in (lstm.y, lstm.state, flux.Recurrent(IN, OUT).y, flux.GRU(IN, OUT).y):
        np.testing.assert_array_equal(state, np.zeros(OUT))
    states = flux.unroll1(lstm).initial_states()        # States y then state
    assert len(states) == 2 and all(s.shape == (OUT,) for s in states)
    assert len(flux.unroll1(flux.GRU(IN, OUT)).initial_states()) == 1


def test_gated_recurrent_alias_builds_a_gru():
    g = flux.GatedRecurrent(IN, OUT)
    randomize(g, seed=7)
    x = sequence(BATCH, N, IN)
    want, _ = np_unroll(gru_cell, np_params(g), x, zeros(1))
    np.testing.assert_allclose(unroll(g, N, stateful=False)(x), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("shape", [(BATCH, N, IN), (N, IN)], ids=["batch", "single"])
def test_built_in_cell_unrolled_matches_its_equations(name, shape):
    layer = randomize(CELLS[name][0](IN, OUT), seed=1)
    u = unroll(layer, N, stateful=False)
    x = sequence(*shape, seed=2)
    out = u(x)
    assert out.shape == shape[:-1] + (OUT,)
    np.testing.assert_allclose(out, cell_oracle(name)(np_params(u), x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_built_in_cell_gradients_through_the_sequence_match_finite_differences(name):
    u = unroll(randomize(CELLS[name][0](IN, OUT), seed=3), N, stateful=False)
    check_back(u, sequence(BATCH, N, IN, seed=4), cell_oracle(name))


def test_lstm_gradients_for_a_single_sequence_match_finite_differences():
    u = unroll(randomize(flux.LSTM(IN, OUT), seed=5), N, stateful=False)
    check_back(u, sequence(N, IN, seed=6), cell_oracle("LSTM"))


def test_gradients_reach_every_step_of_the_input():
    u = unroll(randomize(flux.Recurrent(IN, OUT), seed=6), N, stateful=False)
    x = sequence(BATCH, N, IN)
    Δ = np.zeros((BATCH, N, OUT), np.float32)
    Δ[:, -1] = 1                                 # only the last output: BPTT to every step
    (dx,) = flux.back(u, Δ, x)
    assert dx.shape == x.shape
    assert np.all(np.abs(dx).sum(axis=-1) > 0)


# -- models containing recurrent layers -------------------------------------------------------


def test_the_contracts_container_example_maps_batches_of_sequences():
    model = Chain(Affine(784, 20), σ, flux.Recurrent(20, 30), flux.Recurrent(30, 15))
    randomize(model, seed=8, scale=0.1)
    x = np.random.default_rng(9).random((2, 20, 784)).astype(np.float32)
    out = unroll(model, 20)(x)
    assert out.shape == (2, 20, 15)
    p = np_params(model)
    h = np_sigmoid(x.astype(np.float64) @ p["layers.0.W"] + p["layers.0.b"])
    h, _ = np_unroll(rnn_cell, under(p, "layers.2"), h, zeros(1, 30))
    want, _ = np_unroll(rnn_cell, under(p, "layers.3"), h, zeros(1, 15))
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def lstm_chain():
    model = Chain(Affine(3, 4), flux.LSTM(4, 5), flux.LSTM(5, 3), Affine(3, 2), softmax)
    return randomize(model, seed=10)


def lstm_chain_oracle(p, x, prefix="model"):
    p = under(p, prefix) if prefix else p
    h = x @ p["layers.0.W"] + p["layers.0.b"]
    h, _ = np_unroll(lstm_cell, under(p, "layers.1"), h, zeros(2, 5))
    h, _ = np_unroll(lstm_cell, under(p, "layers.2"), h, zeros(2, 3))
    return np_softmax(h @ p["layers.3.W"] + p["layers.3.b"])


@pytest.mark.parametrize("shape", [(BATCH, N, 3), (N, 3)], ids=["batch", "single"])
def test_a_chain_of_affine_lstm_lstm_affine_softmax_unrolls(shape):
    u = unroll(lstm_chain(), N, stateful=False)
    x = sequence(*shape, seed=11)
    out = u(x)
    assert out.shape == shape[:-1] + (2,)
    np.testing.assert_allclose(out, lstm_chain_oracle(np_params(u), x), rtol=1e-4, atol=1e-5)


def test_a_chain_of_affine_lstm_lstm_affine_softmax_gradients_match_finite_differences():
    check_back(unroll(lstm_chain(), N, stateful=False), sequence(BATCH, N, 3, seed=12),
               lstm_chain_oracle)


# -- initial states ---------------------------------------------------------------------------


def test_a_states_initial_value_is_its_fields_value():
    layer = randomize(flux.Recurrent(IN, OUT), seed=13)
    layer.y = np.ones(OUT, np.float32)
    x = sequence(BATCH, N, IN)
    want, _ = np_unroll(rnn_cell, np_params(layer), x, [np.ones(OUT)])
    out = unroll(layer, N, stateful=False)(x)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    from_zero, _ = np_unroll(rnn_cell, np_params(layer), x, zeros(1))
    assert not np.allclose(out[:, 0], from_zero[:, 0], atol=1e-3)   # step 1 used the ones


def test_lstm_initial_states_are_its_y_and_state_fields():
    layer = randomize(flux.LSTM(IN, OUT), seed=14)
    y0, c0 = np.linspace(-1, 1, OUT, dtype=np.float32), np.full(OUT, 0.5, np.float32)
    layer.y, layer.state = y0, c0
    x = sequence(BATCH, N, IN)
    want, _ = np_unroll(lstm_cell, np_params(layer), x, [y0, c0])
    np.testing.assert_allclose(unroll(layer, N, stateful=False)(x), want, rtol=1e-5, atol=1e-6)


@net
class ConcatRecurrent:
    """state = tanh(hcat(state₋₁, x) W): needs the initial state broadcast over the batch."""
    W: flux.Param
    state: flux.State

    def __call__(self, x):
        self.state = tanh(hcat(prev(self.state), x) @ self.W)
        return self.state


def test_an_initial_state_is_broadcast_over_the_batch_at_the_first_step():
    r = np.random.default_rng(15)
    W, s0 = 0.5 * r.standard_normal((OUT + IN, OUT)), r.standard_normal(OUT).astype(np.float32)
    x = sequence(BATCH, N, IN)
    out = unroll(ConcatRecurrent(W, s0), N, stateful=False)(x)
    assert out.shape == (BATCH, N, OUT)
    state = np.broadcast_to(s0.astype(np.float64), (BATCH, OUT))
    for t in range(N):
        state = np.tanh(np.concatenate([state, x[:, t]], axis=-1) @ W.astype(np.float32))
        np.testing.assert_allclose(out[:, t], state, rtol=1e-5, atol=1e-6)


def test_an_initial_state_with_a_leading_axis_of_1_works_and_is_trainable():
    layer = randomize(flux.Recurrent(IN, OUT), seed=16)
    layer.y = flux.param(0.5 * np.random.default_rng(17).standard_normal((1, OUT)))
    assert list(flux.params(layer)) == ["Wxy", "Wyy", "by", "y"]
    u = unroll(layer, N, stateful=False)
    assert "model.y" in flux.params(u)
    check_back(u, sequence(BATCH, N, IN, seed=18),
               lambda p, x: np_unroll(rnn_cell, under(p, "model"), x, [p["model.y"]])[0])
    assert np.abs(layer.y.grad).max() > 0


def test_an_initial_state_with_a_leading_axis_of_1_on_a_single_sequence():
    # a (n, features) array is one sequence and gives (n, out), whatever the initial state
    layer = randomize(flux.Recurrent(IN, OUT), seed=19)
    y0 = 0.5 * np.random.default_rng(20).standard_normal((1, OUT))
    layer.y = flux.param(y0)
    x = sequence(N, IN)
    out = unroll(layer, N, stateful=False)(x)
    want, _ = np_unroll(rnn_cell, np_params(layer), x, [y0[0]])
    assert out.shape == (N, OUT)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_an_initial_state_that_already_has_the_batch_axis_is_used_as_is():
    layer = randomize(flux.Recurrent(IN, OUT), seed=21)
    y0 = np.random.default_rng(22).standard_normal((BATCH, OUT)).astype(np.float32)
    layer.y = y0                                   # one row per sequence of the batch
    x = sequence(BATCH, N, IN)
    want, _ = np_unroll(rnn_cell, np_params(layer), x, [y0])
    np.testing.assert_allclose(unroll(layer, N, stateful=False)(x), want, rtol=1e-5, atol=1e-6)


def test_state_fields_keep_their_initial_values_after_unrolled_calls_and_training():
    lstm = randomize(flux.LSTM(IN, OUT), seed=23)
    y0 = np.full(OUT, 0.25, np.float32)
    lstm.y = y0.copy()
    model = Chain(lstm, Affine(OUT, 2))
    x = sequence(BATCH, N, IN)
    stateful, stateless = unroll(model, N), unroll(model, N, stateful=False)
    stateful(x)
    stateful(x)
    stateless(x)
    flux.back(stateful, np.ones((BATCH, N, 2), np.float32), x)
    flux.train(stateless, [(x, np.zeros((BATCH, N, 2), np.float32))])
    np.testing.assert_array_equal(lstm.y, y0)
    np.testing.assert_array_equal(lstm.state, np.zeros(OUT))
    assert isinstance(lstm.y, np.ndarray) and isinstance(lstm.state, np.ndarray)


# -- the seed's "Recurrence" page, in Python -------------------------------------------------


@net
class SeedLSTM:
    """The seed's LSTM, as written on its "Recurrence" page."""
    Wxf: flux.Param
    Wyf: flux.Param
    bf: flux.Param
    Wxi: flux.Param
    Wyi: flux.Param
    bi: flux.Param
    Wxo: flux.Param
    Wyo: flux.Param
    bo: flux.Param
    Wxc: flux.Param
    Wyc: flux.Param
    bc: flux.Param
    y: flux.State
    state: flux.State

    def __call__(self, x):
        # Gates
        forget = σ(x @ self.Wxf + prev(self.y) @ self.Wyf + self.bf)
        input = σ(x @ self.Wxi + prev(self.y) @ self.Wyi + self.bi)
        output = σ(x @ self.Wxo + prev(self.y) @ self.Wyo + self.bo)
        # State update and output
        state_ = tanh(x @ self.Wxc + prev(self.y) @ self.Wyc + self.bc)
        self.state = forget * prev(self.state) + input * state_
        self.y = output * tanh(self.state)
        return self.y


def test_the_built_in_lstm_is_the_seeds_lstm_exactly():
    built_in = randomize(flux.LSTM(IN, OUT), seed=24)
    weights = {k: np.array(p.value) for k, p in flux.params(built_in).items()}
    seed = SeedLSTM(**weights, y=np.zeros(OUT, np.float32), state=np.zeros(OUT, np.float32))
    x = sequence(BATCH, N, IN, seed=25)
    a, b = unroll(built_in, N, stateful=False), unroll(seed, N, stateful=False)
    np.testing.assert_array_equal(a(x), b(x))
    Δ = sequence(BATCH, N, OUT, seed=26)
    (dxa,), (dxb,) = flux.back(a, Δ, x), flux.back(b, Δ, x)
    np.testing.assert_allclose(dxa, dxb, rtol=1e-6, atol=1e-7)
    for key in weights:
        np.testing.assert_allclose(getattr(built_in, key).grad, getattr(seed, key).grad,
                                   rtol=1e-6, atol=1e-7, err_msg=key)


def test_the_seeds_chain_unrolled_to_20_steps():
    model = Chain(Affine(784, 20), σ, flux.Recurrent(20, 30), flux.Recurrent(30, 15))
    u = unroll(model, 20)
    x = np.random.default_rng(27).random((3, 20, 784)).astype(np.float32)
    assert u(x).shape == (3, 20, 15)
    flux.reset(u)                         # the hidden state carried is a batch of 3
    assert u(x[0]).shape == (20, 15)      # a single sequence


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [
    flux.Recurrent(IN, OUT), flux.GRU(IN, OUT), flux.LSTM(IN, OUT),
    user_recurrent(), Chain(Affine(IN, IN), flux.LSTM(IN, OUT))],
    ids=["Recurrent", "GRU", "LSTM", "user", "Chain"])
def test_calling_a_recurrent_model_without_unrolling_says_to_unroll_it(model):
    with pytest.raises(flux.FluxError, match="unroll"):
        model(sequence(BATCH, IN))


@net
class ReadsStateWithoutPrev:
    y: flux.State

    def __call__(self, x):
        return self.y + x   # read-before-assign


def test_reading_a_state_before_assigning_it_says_to_use_prev():
    m = ReadsStateWithoutPrev(np.zeros(IN, np.float32))
    with pytest.raises(flux.FluxError, match=r"prev\(self\.y\)") as info:
        unroll(m, N, stateful=False)(sequence(BATCH, N, IN))
    frame = info.value.trace[0]
    assert frame.model == "ReadsStateWithoutPrev"
    assert frame.line == line_of("read-before-assign", __file__)


def test_prev_outside_a_recurrent_model_is_an_error():
    with pytest.raises(flux.FluxError, match="prev"):
        prev(np.ones(3))

    @net
    def previous(x):
        return prev(x)

    with pytest.raises(flux.FluxError, match="prev"):
        previous(np.ones(3))


@net
class PrevOfAnInput:
    y: flux.State

    def __call__(self, x):
        self.y = prev(x)
        return self.y


def test_prev_of_something_that_is_not_a_state_is_an_error():
    with pytest.raises(flux.FluxError, match="State"):
        unroll(PrevOfAnInput(np.zeros(IN)), N, stateful=False)(sequence(BATCH, N, IN))


@pytest.mark.parametrize("n", [0, -1])
def test_prev_needs_at_least_one_step_back(n):
    @net
    class Back:
        y: flux.State

        def __call__(self, x):
            self.y = prev(self.y, n) + x
            return self.y

    with pytest.raises(flux.FluxError, match=f"found {n}") as info:
        unroll(Back(np.zeros(IN)), N, stateful=False)(sequence(BATCH, N, IN))
    assert isinstance(info.value, ValueError)
