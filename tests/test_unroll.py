"""Unrolling: `unroll` (stateful and stateless, `seq=False`), `reset`, compiled copies' hidden
states, training unrolled models, `unroll1`, `flip`, `seq`, and their errors; checked against
NumPy loops of the cells' equations and float64 central finite differences."""
import numpy as np
import pytest

import flux
from flux import (Affine, Batch, Chain, Seq, exp, flip, hcat, net, prev, seq, softmax, unroll,
                  unroll1)
from helpers import (assert_grad_close, check_back, fd_grad, gru_cell, lstm_cell, np_params,
                     np_softmax, np_unroll, randomize, rnn_cell, under)

IN, OUT, N, BATCH = 3, 4, 4, 2

CELLS = {"Recurrent": (flux.Recurrent, rnn_cell, 1),
         "GRU": (flux.GRU, gru_cell, 1),
         "LSTM": (flux.LSTM, lstm_cell, 2)}


def sequence(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def zeros(n_states, out=OUT):
    return [np.zeros(out)] * n_states


def cell(name, seed=0):
    """A built-in cell with random weights, its NumPy step and number of states."""
    layer, step, n_states = CELLS[name]
    return randomize(layer(IN, OUT), seed=seed), step, n_states


def reversed_in_time(x):
    return np.flip(x, axis=-2)


# -- stateful and stateless -------------------------------------------------------------------


@pytest.mark.parametrize("name", CELLS)
def test_stateful_carries_the_hidden_state_from_one_call_to_the_next(name):
    layer, step, n_states = cell(name, seed=1)
    u = unroll(layer, N)                       # stateful is the default
    x1, x2 = sequence(BATCH, N, IN, seed=2), sequence(BATCH, N, IN, seed=3)
    p = np_params(layer)
    want1, final = np_unroll(step, p, x1, zeros(n_states))
    want2, _ = np_unroll(step, p, x2, final)
    np.testing.assert_allclose(u(x1), want1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(u(x2), want2, rtol=1e-4, atol=1e-5)


def test_a_chain_of_recurrent_layers_carries_each_layers_state():
    model = randomize(Chain(flux.Recurrent(IN, 5), flux.LSTM(5, OUT)), seed=4)
    u = unroll(model, N)
    x1, x2 = sequence(BATCH, N, IN, seed=5), sequence(BATCH, N, IN, seed=6)
    p = np_params(model)
    first, second = under(p, "layers.0"), under(p, "layers.1")
    h1, s1 = np_unroll(rnn_cell, first, x1, zeros(1, 5))
    y1, s2 = np_unroll(lstm_cell, second, h1, zeros(2))
    h2, _ = np_unroll(rnn_cell, first, x2, s1)
    y2, _ = np_unroll(lstm_cell, second, h2, s2)
    np.testing.assert_allclose(u(x1), y1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(u(x2), y2, rtol=1e-4, atol=1e-5)


def test_reset_puts_the_hidden_state_back():
    layer, step, _ = cell("LSTM", seed=7)
    u = unroll(layer, N)
    x = sequence(BATCH, N, IN)
    first = u(x)
    assert not np.allclose(u(x), first, atol=1e-4)      # the state carried over
    flux.reset(u)
    np.testing.assert_allclose(u(x), first, rtol=1e-6, atol=1e-7)
    outer = Chain(u, Affine(OUT, 2))                      # reset reaches unrolled models inside
    outer(x)
    flux.reset(outer)
    np.testing.assert_allclose(u(x), first, rtol=1e-6, atol=1e-7)


def test_each_compiled_copy_has_its_own_hidden_state():
    layer, step, n_states = cell("GRU", seed=8)
    u = unroll(layer, N)
    c1, c2 = flux.compile(u, "numpy"), flux.compile(u, "numpy")
    x1, x2 = sequence(BATCH, N, IN, seed=9), sequence(BATCH, N, IN, seed=10)
    p = np_params(layer)
    want1, final = np_unroll(step, p, x1, zeros(n_states))
    want2, _ = np_unroll(step, p, x2, final)
    np.testing.assert_allclose(c1(x1), want1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c2(x1), want1, rtol=1e-4, atol=1e-5)   # not c1's state
    np.testing.assert_allclose(u(x1), want1, rtol=1e-4, atol=1e-5)    # nor the model's own
    np.testing.assert_allclose(c1(x2), want2, rtol=1e-4, atol=1e-5)
    flux.reset(u)                                                       # every copy
    np.testing.assert_allclose(c1(x1), want1, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c2(x1), want1, rtol=1e-4, atol=1e-5)
    flux.reset(c1)
    np.testing.assert_allclose(c1(x1), want1, rtol=1e-4, atol=1e-5)


def test_a_batch_size_change_with_a_carried_state_says_to_reset():
    u = unroll(flux.LSTM(IN, OUT), N)
    u(sequence(BATCH, N, IN))
    with pytest.raises(flux.FluxError, match=r"reset") as info:
        u(sequence(BATCH + 1, N, IN))
    assert str(BATCH) in str(info.value) and str(BATCH + 1) in str(info.value)
    flux.reset(u)
    assert u(sequence(BATCH + 1, N, IN)).shape == (BATCH + 1, N, OUT)


def test_a_batch_then_a_single_sequence_with_a_carried_state_says_to_reset():
    u = unroll(flux.Recurrent(IN, OUT), N)
    u(sequence(3, N, IN))
    with pytest.raises(flux.FluxError, match=r"reset"):
        u(sequence(N, IN))          # the carried state is a batch of 3, the input one sequence


def test_a_single_sequence_then_a_batch_with_a_carried_state_says_to_reset():
    u = unroll(flux.Recurrent(IN, OUT), N)
    u(sequence(N, IN))
    with pytest.raises(flux.FluxError, match=r"reset"):
        u(sequence(OUT, N, IN))     # a batch as large as the state's width (OUT)


def test_stateless_always_starts_from_the_state_fields():
    layer, step, _ = cell("Recurrent", seed=11)
    u = unroll(layer, N, stateful=False)
    x = sequence(BATCH, N, IN)
    p = np_params(layer)
    want, _ = np_unroll(step, p, x, zeros(1))
    np.testing.assert_allclose(u(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(u(x), want, rtol=1e-5, atol=1e-6)
    layer.y = np.ones(OUT, np.float32)                  # a new initial value is seen
    want, _ = np_unroll(step, p, x, [np.ones(OUT)])
    np.testing.assert_allclose(u(x), want, rtol=1e-5, atol=1e-6)


def test_a_stateful_model_starts_from_a_changed_field_after_reset():
    layer, step, _ = cell("Recurrent", seed=12)
    u = unroll(layer, N)
    x = sequence(BATCH, N, IN)
    u(x)
    layer.y = np.full(OUT, 0.5, np.float32)
    flux.reset(u)
    want, _ = np_unroll(step, np_params(layer), x, [np.full(OUT, 0.5)])
    np.testing.assert_allclose(u(x), want, rtol=1e-5, atol=1e-6)


# -- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(BATCH, IN), (IN,)], ids=["batch", "single"])
def test_seq_false_feeds_one_value_at_every_step(shape):
    layer, step, _ = cell("Recurrent", seed=13)
    x = sequence(*shape)
    out = unroll(layer, N, stateful=False, seq=False)(x)
    time_axis = len(shape) - 1
    assert out.shape == shape[:-1] + (N, OUT)
    repeated = np.stack([x] * N, axis=time_axis)
    want, _ = np_unroll(step, np_params(layer), repeated, zeros(1))
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_batches_and_seqs_go_in_and_come_out():
    layer, step, _ = cell("Recurrent", seed=14)
    u = unroll(layer, 2, stateful=False)
    raw = np.array([[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]], np.float32) / 10
    want, _ = np_unroll(step, np_params(layer), raw, zeros(1))
    out = u(Batch([Seq(raw[0]), Seq(raw[1])]))
    assert isinstance(out, Batch)
    np.testing.assert_allclose(flux.rawbatch(out), want, rtol=1e-5, atol=1e-6)
    one = u(Seq(raw[0]))
    assert isinstance(one, Seq)
    np.testing.assert_allclose(flux.rawbatch(one), want[0], rtol=1e-5, atol=1e-6)


def test_an_unrolled_model_compiles():
    model = randomize(Chain(Affine(IN, 5), flux.LSTM(5, OUT), softmax), seed=15)
    u = unroll(model, N, stateful=False)
    x = sequence(BATCH, N, IN)
    np.testing.assert_allclose(flux.compile(u, "numpy")(x), u(x), rtol=1e-6, atol=1e-7)


# -- training ---------------------------------------------------------------------------------


def test_train_reduces_the_loss_of_a_stateless_unrolled_model():
    # predict the running sum of a sequence
    flux.seed(0)
    r = np.random.default_rng(16)
    xs = r.uniform(-1, 1, (8, 16, 5, 1)).astype(np.float32)    # 8 batches of 16 sequences
    data = [(x, np.cumsum(x, axis=1) / 2) for x in xs]
    model = unroll(Chain(flux.Recurrent(1, 8), Affine(8, 1)), 5, stateful=False)

    def loss():
        return np.mean([np.mean((model(x) - y) ** 2) for x, y in data])

    before = loss()
    losses = flux.train(model, data, opt=flux.ADAM(0.01), epochs=10)
    assert len(losses) == 10 and losses[-1] < losses[0]
    assert loss() < 0.2 * before, (before, loss())


def test_the_first_loss_train_reports_is_the_oracles():
    layer, step, _ = cell("GRU", seed=17)
    model = unroll(layer, N, stateful=False)
    x, y = sequence(BATCH, N, IN, seed=18), sequence(BATCH, N, OUT, seed=19)
    want, _ = np_unroll(step, np_params(layer), x, zeros(1))
    (loss,) = flux.train(model, [(x, y)], opt=flux.SGD(0.0))
    np.testing.assert_allclose(loss, np.mean((want - y) ** 2), rtol=1e-4)


def test_back_on_a_stateful_model_truncates_the_gradient_at_the_call_boundary():
    layer, step, _ = cell("Recurrent", seed=20)
    u = unroll(layer, N)
    x1, x2 = sequence(BATCH, N, IN, seed=21), sequence(BATCH, N, IN, seed=22)
    Δ = sequence(BATCH, N, OUT, seed=23).astype(np.float64)
    p = np_params(layer)
    _, (carried,) = np_unroll(step, p, x1, zeros(1))      # a constant for the second call
    u(x1)
    (dx,) = flux.back(u, Δ.astype(np.float32), x2)

    def truncated():
        return np.sum(Δ * np_unroll(step, p, x2, [carried])[0])

    def through_both_calls():
        _, (h,) = np_unroll(step, p, x1, zeros(1))
        return np.sum(Δ * np_unroll(step, p, x2, [h])[0])

    x64 = x2.astype(np.float64)
    assert_grad_close(dx, fd_grad(lambda: np.sum(Δ * np_unroll(step, p, x64, [carried])[0]),
                                  x64), name="input")
    for key, q in flux.params(layer).items():
        assert_grad_close(q.grad, fd_grad(truncated, p[key]), name=key)
    full = fd_grad(through_both_calls, p["Wyy"])
    assert not np.allclose(layer.Wyy.grad, full, atol=1e-2 * np.abs(full).max())
    # back was a call: the next call continues from the state after x2
    _, after = np_unroll(step, p, x2, [carried])
    x3 = sequence(BATCH, N, IN, seed=24)
    want3, _ = np_unroll(step, p, x3, after)
    np.testing.assert_allclose(u(x3), want3, rtol=1e-4, atol=1e-5)


def test_training_a_stateful_model_carries_the_state_and_truncates_the_gradient():
    layer, step, _ = cell("Recurrent", seed=25)
    u = unroll(layer, N)
    pairs = [(sequence(BATCH, N, IN, seed=26), sequence(BATCH, N, OUT, seed=27)),
             (sequence(BATCH, N, IN, seed=28), sequence(BATCH, N, OUT, seed=29))]
    lr = 0.5
    p = np_params(layer)
    state, losses = [np.zeros(OUT)], []
    for x, y in pairs:                      # SGD by hand, the carried state held constant
        def loss(x=x, y=y, start=state):
            return np.mean((np_unroll(step, p, x, start)[0] - y) ** 2)

        losses.append(loss())
        grads = {key: fd_grad(loss, p[key]) for key in p}
        _, state = np_unroll(step, p, x, state)          # forward with the old params
        for key in p:
            p[key] -= lr * grads[key]
    flux.train(u, pairs[:1], opt=flux.SGD(lr))
    (second,) = flux.train(u, pairs[1:], opt=flux.SGD(lr))
    np.testing.assert_allclose(second, losses[1], rtol=1e-4)
    for key, q in flux.params(layer).items():
        np.testing.assert_allclose(q.value, p[key], rtol=1e-3, atol=1e-4, err_msg=key)


# -- unroll1 ----------------------------------------------------------------------------------


@net
class TwoStates:
    """Declares State b before State a."""
    b: flux.State
    a: flux.State

    def __call__(self, x):
        self.a = prev(self.a) + x
        self.b = prev(self.b) * 2
        return self.a + self.b


def test_initial_states_are_a_tuple_of_arrays_in_declaration_order():
    u1 = unroll1(TwoStates(np.full(IN, 2.0), np.full(IN, 1.0)))
    states = u1.initial_states()
    assert isinstance(states, tuple) and len(states) == 2
    assert all(isinstance(s, np.ndarray) for s in states)
    np.testing.assert_array_equal(states[0], np.full(IN, 2.0))    # b
    np.testing.assert_array_equal(states[1], np.full(IN, 1.0))    # a
    (b, a), y = u1.step(states, np.full(IN, 3.0, np.float32))
    np.testing.assert_allclose(b, 4.0)
    np.testing.assert_allclose(a, 4.0)
    np.testing.assert_allclose(y, 8.0)
    lstm_states = unroll1(flux.LSTM(IN, OUT)).initial_states()
    assert [s.shape for s in lstm_states] == [(OUT,), (OUT,)]


@pytest.mark.parametrize("shape", [(BATCH, IN), (IN,)], ids=["batch", "single"])
def test_step_is_a_pure_function_of_the_states(shape):
    layer, step, _ = cell("LSTM", seed=30)
    u1 = unroll1(layer)
    x = sequence(*shape, seed=31)
    states = (sequence(OUT, seed=32), sequence(OUT, seed=33))
    (y1, c1), out1 = u1.step(states, x)
    (y2, c2), out2 = u1.step(states, x)
    want_y, want_c = step(np_params(layer), x.astype(np.float64), *states)
    np.testing.assert_allclose(y1, want_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c1, want_c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out1, want_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(c2, c1)
    np.testing.assert_array_equal(out2, out1)


def test_chained_steps_equal_unroll_over_the_sequence():
    layer, _, _ = cell("LSTM", seed=34)
    u1 = unroll1(layer)
    x = sequence(BATCH, N, IN, seed=35)
    states, outs = u1.initial_states(), []
    for t in range(N):
        states, y = u1.step(states, x[:, t])
        outs.append(y)
    want = unroll(layer, N, stateful=False)(x)
    np.testing.assert_allclose(np.stack(outs, axis=1), want, rtol=1e-5, atol=1e-6)


def test_calling_unroll1_advances_its_own_state():
    layer, _, _ = cell("GRU", seed=36)
    u1 = unroll1(layer)
    x = sequence(BATCH, N, IN, seed=37)
    want = unroll(layer, N, stateful=False)(x)
    for t in range(N):
        np.testing.assert_allclose(u1(x[:, t]), want[:, t], rtol=1e-5, atol=1e-6)
    flux.reset(u1)
    np.testing.assert_allclose(u1(x[:, 0]), want[:, 0], rtol=1e-5, atol=1e-6)
    u1.step(u1.initial_states(), x[:, 0])                 # leaves u1's own state alone
    np.testing.assert_allclose(u1(x[:, 1]), want[:, 1], rtol=1e-5, atol=1e-6)


@net
class Decoder:
    """The seed's decoder pattern, without attention: an LSTM step on the context."""
    recur: object
    y: flux.State
    state: flux.State

    def __call__(self, ctx):
        (_, self.state), self.y = self.recur.step((prev(self.y), prev(self.state)), ctx)
        return self.y


def decoder(seed=38):
    r = np.random.default_rng(seed)
    lstm = randomize(flux.LSTM(IN, OUT), seed=seed)
    return Decoder(unroll1(lstm), flux.param(0.5 * r.standard_normal((1, OUT))),
                   flux.param(0.5 * r.standard_normal((1, OUT))))


def decoder_oracle(p, ctx):
    batch = ctx.shape[:-1]
    repeated = np.stack([ctx] * N, axis=len(batch))
    y0, c0 = p["model.y"], p["model.state"]
    if not batch:
        y0, c0 = y0[0], c0[0]
    return np_unroll(lstm_cell, under(p, "model.recur.model"), repeated, [y0, c0])[0]


def test_step_inside_another_models_forward_the_seeds_decoder():
    u = unroll(decoder(), N, stateful=False, seq=False)
    assert {"model.y", "model.state", "model.recur.model.Wxf"} <= set(flux.params(u))
    ctx = sequence(BATCH, IN, seed=39)
    assert u(ctx).shape == (BATCH, N, OUT)
    check_back(u, ctx, decoder_oracle)               # y and state are trained too


def test_the_seeds_decoder_on_a_single_context():
    u = unroll(decoder(seed=40), N, stateful=False, seq=False)
    ctx = sequence(IN, seed=41)
    out = u(ctx)
    assert out.shape == (N, OUT)
    np.testing.assert_allclose(out, decoder_oracle(np_params(u), ctx), rtol=1e-5, atol=1e-6)


# -- flip -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(BATCH, N, IN), (N, IN)], ids=["batch", "single"])
def test_flip_runs_the_recurrence_backwards_in_time(shape):
    layer, step, _ = cell("LSTM", seed=42)
    x = sequence(*shape, seed=43)
    out = unroll(flip(layer), N)(x)
    backwards, _ = np_unroll(step, np_params(layer), reversed_in_time(x), zeros(2))
    np.testing.assert_allclose(out, reversed_in_time(backwards), rtol=1e-5, atol=1e-6)
    forwards, _ = np_unroll(step, np_params(layer), x, zeros(2))
    assert not np.allclose(out, forwards, atol=1e-3)


@net
class Encoder:
    """The seed's bidirectional encoder: an annotation from both directions."""
    forward: object
    backward: object

    def __call__(self, token):
        return hcat(self.forward(token), self.backward(token))


def encoder(n_in, n_out, seed=44):
    model = Encoder(flux.LSTM(n_in, n_out // 2), flip(flux.LSTM(n_in, n_out // 2)))
    return randomize(model, seed=seed)


def encoder_oracle(p, x, prefix="model"):
    p = under(p, prefix) if prefix else p
    half = p["forward.Wxf"].shape[1]
    forwards, _ = np_unroll(lstm_cell, under(p, "forward"), x, zeros(2, half))
    backwards, _ = np_unroll(lstm_cell, under(p, "backward.model"), reversed_in_time(x),
                             zeros(2, half))
    return np.concatenate([forwards, reversed_in_time(backwards)], axis=-1)


def test_a_bidirectional_encoder_concatenates_both_directions():
    u = unroll(encoder(IN, 2 * OUT), N, stateful=False)
    x = sequence(BATCH, N, IN, seed=45)
    out = u(x)
    assert out.shape == (BATCH, N, 2 * OUT)
    np.testing.assert_allclose(out, encoder_oracle(np_params(u), x), rtol=1e-5, atol=1e-6)


def test_gradients_through_flip_match_finite_differences():
    check_back(unroll(encoder(IN, 2 * OUT, seed=46), N, stateful=False),
               sequence(BATCH, N, IN, seed=47), encoder_oracle)


def test_a_flipped_model_outside_an_unrolled_one_says_to_unroll():
    with pytest.raises(flux.FluxError, match="unroll"):
        flip(flux.LSTM(IN, OUT))(sequence(BATCH, IN))


# -- seq --------------------------------------------------------------------------------------


@net
def first_twice_plus_last(x):
    steps = seq(x, 3)
    return steps[0] * 2 + steps[2]


def test_seq_splits_a_batch_of_sequences_along_time_and_one_sequence_along_axis_0():
    batch = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(first_twice_plus_last(batch),
                                  batch[:, 0] * 2 + batch[:, 2])
    one = batch[1]
    np.testing.assert_array_equal(first_twice_plus_last(one), one[0] * 2 + one[2])
    parts = seq(batch, 3)
    assert len(parts) == 3 and all(s.shape == (2, 4) for s in parts)
    np.testing.assert_array_equal(parts[1], batch[:, 1])


def test_seq_of_the_wrong_length_names_both_lengths():
    with pytest.raises(flux.FluxError, match=r"length 5\b.*length 4\b") as info:
        seq(np.zeros((2, 4, 3)), 5)
    assert isinstance(info.value, ValueError)
    with pytest.raises(flux.FluxError, match=r"length 3\b.*length 2\b"):
        first_twice_plus_last(np.zeros((2, 2, 3), np.float32))     # seq(x, 3) inside


# -- the seed's attention translation model ---------------------------------------------------


@net
class AttentionDecoder:
    """The seed's Decoder: attends over the annotations, then one LSTM step."""
    attend: object
    recur: object
    state: flux.State
    y: flux.State
    N: int

    def __call__(self, anns):
        energies = list(map(lambda ann: exp(self.attend(hcat(prev(self.state), ann))),  # (B, 1)
                            seq(anns, self.N)))
        weights = [e / sum(energies) for e in energies]
        ctx = sum(map(lambda α, ann: α * ann, weights, seq(anns, self.N)))            # (B, H)
        (_, self.state), self.y = self.recur.step((prev(self.y), prev(self.state)), ctx)
        return self.y


NALPHA, NPHRASE, NHIDDEN = 5, 4, 6


def translation_model():
    encode = encoder(NALPHA, NHIDDEN, seed=48)
    decode = Chain(AttentionDecoder(Affine(2 * NHIDDEN, 1), unroll1(flux.LSTM(NHIDDEN, NHIDDEN)),
                                    flux.param(np.zeros((1, NHIDDEN))),
                                    flux.param(np.zeros((1, NHIDDEN))), NPHRASE),
                   Affine(NHIDDEN, NALPHA), softmax)
    randomize(decode, seed=49)
    return Chain(unroll(encode, NPHRASE, stateful=False),
                 unroll(decode, NPHRASE, stateful=False, seq=False))


def translation_oracle(p, x):
    anns = encoder_oracle(p, x, prefix="layers.0.model")            # (B, N, H)
    d = under(p, "layers.1.model.layers.0")
    out = under(p, "layers.1.model.layers.1")
    state, y = d["state"], d["y"]
    outputs = []
    for _ in range(NPHRASE):
        energies = [np.exp(np.concatenate([np.broadcast_to(state, anns[:, i].shape), anns[:, i]],
                                          axis=-1) @ d["attend.W"] + d["attend.b"])
                    for i in range(NPHRASE)]
        ctx = sum(e / sum(energies) * anns[:, i] for i, e in enumerate(energies))
        y, state = lstm_cell(under(d, "recur.model"), ctx, y, state)
        outputs.append(np_softmax(y @ out["W"] + out["b"]))
    return np.stack(outputs, axis=1)


def test_the_seeds_translation_model_runs_and_matches_its_equations():
    model = translation_model()
    x = sequence(BATCH, NPHRASE, NALPHA, seed=50)
    out = model(x)
    assert out.shape == (BATCH, NPHRASE, NALPHA)
    np.testing.assert_allclose(out, translation_oracle(np_params(model), x),
                               rtol=1e-4, atol=1e-5)


def test_the_seeds_translation_model_trains():
    model = translation_model()
    r = np.random.default_rng(51)
    tokens = r.integers(0, NALPHA, (8, NPHRASE))
    x = np.eye(NALPHA, dtype=np.float32)[tokens]                    # (8, N, NALPHA) one-hot
    data = [(x, x)] * 30                                            # learn to copy
    losses = flux.train(model, data, loss=flux.crossentropy, opt=flux.ADAM(0.02), epochs=2)
    assert losses[1] < 0.8 * losses[0], losses
    assert flux.params(model)["layers.1.model.layers.0.y"].value.any()    # trained too


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 2.5])
def test_unroll_needs_a_whole_number_of_steps(n):
    with pytest.raises(flux.FluxError, match=f"found {n}") as info:
        unroll(flux.Recurrent(IN, OUT), n)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("shape", [(BATCH, 4, IN), (4, IN)], ids=["batch", "single"])
def test_a_sequence_of_the_wrong_length_names_both_lengths(shape):
    u = unroll(flux.Recurrent(IN, OUT), 5)
    with pytest.raises(flux.FluxError, match=r"\b5\b.*\b4\b") as info:
        u(sequence(*shape))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("count", [1, 3])
def test_step_with_the_wrong_number_of_states_is_an_error(count):
    u1 = unroll1(flux.LSTM(IN, OUT))
    with pytest.raises(flux.FluxError, match=rf"2 states, found {count}"):
        u1.step((np.zeros(OUT, np.float32),) * count, sequence(IN))
