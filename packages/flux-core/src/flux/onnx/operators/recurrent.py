"""ONNX's recurrent operators, RNN, GRU and LSTM, imported as flux loops.

Shapes (``layout=0``; ``layout=1`` swaps the first two axes of X, Y, initial and final
states): ``X (T, N, I)``, ``W (D, G·H, I)``, ``R (D, G·H, H)``, ``B (D, 2·G·H)`` (the input
biases ``Wb``, then the recurrence biases ``Rb``), outputs ``Y (T, D, N, H)`` (every step's
hidden state) and ``Y_h``/``Y_c (D, N, H)`` (the last ones), with ``D`` = 2 for
``direction="bidirectional"`` (the second direction runs from the last step to the first)
and G gates, in ONNX's order:

    RNN    h = f(x Wᵀ + h₋ Rᵀ + Wb + Rb)                                   (f = Tanh)
    GRU    z = f(x Wzᵀ + h₋ Rzᵀ + Wbz + Rbz)      r = f(x Wrᵀ + h₋ Rrᵀ + Wbr + Rbr)
           ĥ = g(x Whᵀ + (r ⊙ h₋) Rhᵀ + Rbh + Wbh)      (linear_before_reset = 0)
           ĥ = g(x Whᵀ + r ⊙ (h₋ Rhᵀ + Rbh) + Wbh)      (linear_before_reset = 1)
           h = (1 − z) ⊙ ĥ + z ⊙ h₋                                         (f = σ, g = tanh)
    LSTM   i = f(x Wiᵀ + h₋ Riᵀ + Pi ⊙ c₋ + Wbi + Rbi)   f' = likewise with Pf (or 1 − i
           with input_forget)   c̃ = g(x Wcᵀ + h₋ Rcᵀ + Wbc + Rbc)   c = f' ⊙ c₋ + i ⊙ c̃
           o = f(x Woᵀ + h₋ Roᵀ + Po ⊙ c + Wbo + Rbo)   h = o ⊙ h(c)      (σ, tanh, tanh)

`clip` bounds the gates' inputs to ``[−clip, clip]`` before their activations (as
onnxruntime does; LSTM's cell state is not clipped before h). The `activations` attribute
names the functions per direction (`ACTIVATIONS`), each taking the next of
``activation_alpha`` and ``activation_beta`` it needs, in order. Sequences shorter than T
(``sequence_lens``) are masks: past its length a sequence's state stops changing and its
Y is 0 (run backwards, its state starts changing at its own last step).

The steps run as one `scan` (traced once, as flux's unrolled recurrences are), or as a
Python loop over the steps where the trace takes no loops (backends without them) and on
arrays; `flux.shapes` shows one step. Each step computes its input product ``x Wᵀ``:
backends that lift loops (`flux.backends.lift_loops`) make those one product over the whole
sequence.
"""
from __future__ import annotations

import numpy as np

from flux.ir import primitives as P
from flux.ir.body import BodyTrace
from flux.ir.graph import Aval
from flux.ir.recording import named
from flux.ir.trace import Tracer, current_trace
from flux.onnx.operators.activations import ACTIVATIONS
from flux.onnx.operators.nn import results
from flux.onnx.operators.registry import known, operator
from flux.ops import numpy_api as api

__all__ = ["recur"]


# -- the loop -------------------------------------------------------------------------------------


def _aval(x) -> Aval:
    return x.aval if isinstance(x, Tracer) else Aval(np.shape(x), np.asarray(x).dtype)


def recur(step, carry: list, xs: list, reverse: bool = False):
    """Run ``carry, ys = step(carry, xs_t)`` over the first axis of the sequences `xs`
    (from the last step to the first when `reverse`): ``(final carry, ys stacked over the
    steps along axis 0)``. Inside a trace that takes loops the step is traced once, as the
    body of one `scan`; otherwise it runs step by step."""
    length = int(np.shape(xs[0])[0])
    trace = current_trace()
    if trace is not None and trace.log is not None:
        return _shown_once(step, carry, xs, length)
    if trace is None or not trace.loops:
        return _stepped(step, carry, xs, length, reverse)
    carry = [api.lift(c) for c in carry]
    body = BodyTrace(trace)
    body.source_override = trace.source_override     # (the ONNX node, while importing)
    with body:
        carried = [body.new_input(_aval(c)) for c in carry]
        steps = [body.new_input(Aval(tuple(np.shape(x))[1:], api._dtype(x))) for x in xs]
        new, ys = step(carried, steps)
        new = [api.lift(c).astype(_aval(c0).dtype) for c, c0 in zip(new, carry)]
        graph = body.body_graph(carried + steps, new + list(ys))
    outs = P.scan_p(*body.captured, *carry, *xs, body=graph, length=length,
                    n_consts=len(body.captured), n_carry=len(carry),
                    x_axes=(0,) * len(xs), y_axes=(0,) * len(ys), reverse=reverse)
    return outs[:len(carry)], outs[len(carry):]


def _shown_once(step, carry, xs, length):
    """For `flux.shapes`: one step, on the first step of each sequence, its outputs shown
    stacked over the steps (``over_<n>_steps``), as flux's own loops print."""
    def stacked(y):
        return api.broadcast_to(api.expand_dims(y, 0), (length,) + tuple(np.shape(y)))
    stacked.__name__ = f"over_{length}_steps"
    new, ys = step(list(carry), [x[0] for x in xs])
    return list(new), [named(stacked)(y) for y in ys]


def _stepped(step, carry, xs, length, reverse):
    """The steps one after the other (on arrays, or traced as copies)."""
    ys = [None] * length
    for t in (range(length - 1, -1, -1) if reverse else range(length)):
        carry, ys[t] = step(carry, [x[t] for x in xs])
        carry = list(carry)
    return carry, [np.stack([y[j] for y in ys]) for j in range(len(ys[0]))]


# -- what the three operators share ---------------------------------------------------------------


class Recurrence:
    """A recurrent node's inputs read the same way for RNN, GRU and LSTM: time first, one
    direction at a time, with its activations and its sequence masks."""

    def __init__(self, node, gates: int, defaults: tuple, x, w, r, b, sequence_lens,
                 initial_h):
        self.node, self.gates = node, gates
        self.layout = node.attr("layout", 0)
        x, w, r = api._as_tracer_or_array(x), api.lift(w), api.lift(r)
        if x.ndim != 3 or np.ndim(w) != 3 or np.ndim(r) != 3:
            raise node.error(f"X, W and R have 3 axes; found shapes {tuple(x.shape)}, "
                             f"{tuple(np.shape(w))} and {tuple(np.shape(r))}")
        self.x = np.swapaxes(x, 0, 1) if self.layout else x            # (T, N, I)
        self.length, self.batch = self.x.shape[0], self.x.shape[1]
        self.hidden = np.shape(r)[-1]
        self.directions = np.shape(w)[0]
        direction = node.attr("direction", "forward")
        expected = {"forward": 1, "reverse": 1, "bidirectional": 2}.get(direction)
        if expected is None:
            raise node.error(f"direction is forward, reverse or bidirectional; found "
                             f"{direction!r}")
        self.reverse = [direction == "reverse", True][:self.directions]
        size = node.attr("hidden_size", self.hidden)
        if expected != self.directions or size != self.hidden or \
                np.shape(w)[1] != gates * self.hidden or \
                tuple(np.shape(r)[1:]) != (gates * self.hidden, self.hidden):
            raise node.error(
                f"direction {direction!r} with hidden_size {size} needs W of shape "
                f"({expected}, {gates * size}, input size) and R ({expected}, "
                f"{gates * size}, {size}); found {tuple(np.shape(w))} and "
                f"{tuple(np.shape(r))}")
        self.w, self.r, self.b = w, r, None if b is None else api.lift(b)
        self.dtype = self.x.dtype
        self.clip = node.attr("clip", None)
        self.functions = self._activations(defaults)
        self.masks = self._masks(sequence_lens)
        self.initial_h = self.initial(initial_h)

    def _activations(self, defaults):
        """Per direction, the activation functions the node names (or `defaults`)."""
        node = self.node
        names = node.attr("activations", None) or list(defaults) * self.directions
        if len(names) != len(defaults) * self.directions:
            raise node.error(f"activations lists {len(defaults)} functions per direction "
                             f"({len(defaults) * self.directions} in all), found {names}")
        alphas = list(node.attr("activation_alpha", None) or [])
        betas = list(node.attr("activation_beta", None) or [])
        known_names = {name.lower(): name for name in ACTIVATIONS}
        functions = []
        for name in names:
            if name.lower() not in known_names:
                raise node.error(f"the activation {name!r} is not one of ONNX's recurrent "
                                 f"activations: {', '.join(ACTIVATIONS)}")
            fn, params = ACTIVATIONS[known_names[name.lower()]]
            values = []
            for k, default in enumerate(params):
                source = alphas if k == 0 else betas
                values.append(float(source.pop(0)) if source else default)
            functions.append(lambda v, fn=fn, values=tuple(values): fn(v, *values))
        per = len(defaults)
        return [functions[d * per:(d + 1) * per] for d in range(self.directions)]

    def activate(self, direction: int, k: int, v, clipped: bool = True):
        """Activation `k` of `direction` on `v` (clipped first if the node clips and
        `clipped`)."""
        if self.clip is not None and clipped:
            v = np.clip(v, -float(self.clip), float(self.clip))
        return self.functions[direction][k](v)

    def _masks(self, sequence_lens):
        """``(T, N, 1)`` booleans, step t of sequence n within its length; None when every
        sequence is known to have length T."""
        if sequence_lens is None:
            return None
        if known(sequence_lens):
            lengths = np.asarray(sequence_lens)
            if lengths.shape != (self.batch,):
                raise self.node.error(f"sequence_lens has one length per sequence: shape "
                                      f"({self.batch},), found {lengths.shape}")
            if np.any(lengths < 1) or np.any(lengths > self.length):
                raise self.node.error(f"sequence_lens must be between 1 and {self.length}, "
                                      f"found {lengths.tolist()}")
            if np.all(lengths == self.length):
                return None
        steps = np.arange(self.length).reshape(-1, 1, 1)
        return steps < api.lift(sequence_lens).reshape(1, -1, 1)

    def initial(self, value):
        """A state input ``(D, N, H)`` (``(N, D, H)`` with layout 1), or zeros."""
        if value is None:
            zero = np.zeros((), self.dtype)
            return [api.broadcast_to(zero, (self.batch, self.hidden))] * self.directions
        value = api.lift(value)
        if self.layout:
            value = np.swapaxes(value, 0, 1)
        expected = (self.directions, self.batch, self.hidden)
        if tuple(np.shape(value)) != expected:
            raise self.node.error(f"initial states have shape {expected} (directions, batch, "
                                  f"hidden) here, found {tuple(np.shape(value))}")
        return [value[d] for d in range(self.directions)]

    def weights(self, d: int):
        """Direction d's ``(Wᵀ (I, G·H), Rᵀ (H, G·H), Wb, Rb)``; the biases are None
        without B."""
        wb = rb = None
        if self.b is not None:
            size = self.gates * self.hidden
            wb, rb = self.b[d][:size], self.b[d][size:]
        return np.transpose(self.w[d]), np.transpose(self.r[d]), wb, rb

    @staticmethod
    def project(x, wt, bias):
        """A step's input product ``x Wᵀ + bias`` (`bias` None: none)."""
        xw = x @ wt                                              # (N, G·H)
        return xw if bias is None else xw + bias

    def gate(self, values, k: int):
        """Gate k of values ``(…, G·H)``."""
        return values[..., k * self.hidden:(k + 1) * self.hidden]

    def run(self, d: int, step, carry: list, inputs: list):
        """Direction d's loop: `step` on one step's `inputs`, with masks where sequences end
        early: ``(final carry, [Y (T, N, H)])``."""
        if self.masks is None:
            return recur(step, carry, inputs, self.reverse[d])

        def masked(state, xs):
            new, ys = step(state, xs[:-1])
            mask = xs[-1]
            return ([np.where(mask, n, s) for n, s in zip(new, state)],
                    [np.where(mask, y, 0.0) for y in ys])
        return recur(masked, carry, inputs + [self.masks], self.reverse[d])

    def outputs(self, ys: list, finals: list):
        """``Y`` and the final states in the node's layout, from each direction's
        ``Y (T, N, H)`` and final states ``[(N, H) per direction] per state``."""
        y = np.stack(ys, axis=1)                                 # (T, D, N, H)
        states = [np.stack(per_direction, axis=0) for per_direction in finals]   # (D, N, H)
        if self.layout:
            y = np.transpose(y, (2, 0, 1, 3))                   # (N, T, D, H)
            states = [np.swapaxes(s, 0, 1) for s in states]     # (N, D, H)
        return results(self.node, y, *states)


# -- RNN, GRU, LSTM ------------------------------------------------------------------------------


@operator("RNN")
def import_rnn(node, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """``h = f(x Wᵀ + h₋ Rᵀ + Wb + Rb)``; outputs Y, Y_h."""
    rec = Recurrence(node, 1, ("Tanh",), x, w, r, b, sequence_lens, initial_h)
    ys, finals = [], []
    for d in range(rec.directions):
        wt, rt, wb, rb = rec.weights(d)
        bias = None if wb is None else wb + rb

        def step(state, xs, d=d, wt=wt, rt=rt, bias=bias):
            h = rec.activate(d, 0, rec.project(xs[0], wt, bias) + state[0] @ rt)
            return [h], [h]
        (h,), (y,) = rec.run(d, step, [rec.initial_h[d]], [rec.x])
        ys.append(y)
        finals.append(h)
    return rec.outputs(ys, [finals])


@operator("GRU")
def import_gru(node, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """Gates z, r, h in ONNX's order (see the module docstring); outputs Y, Y_h."""
    rec = Recurrence(node, 3, ("Sigmoid", "Tanh"), x, w, r, b, sequence_lens, initial_h)
    before_reset = node.attr("linear_before_reset", 0)
    hidden = rec.hidden
    ys, finals = [], []
    for d in range(rec.directions):
        wt, rt, wb, rb = rec.weights(d)                          # rt: (H, 3H)
        rt_zr, rt_h = rt[:, :2 * hidden], rt[:, 2 * hidden:]
        bias = rb_h = None
        if wb is not None:
            folded = rb if not before_reset else api.concatenate(
                [rb[:2 * hidden], np.zeros(hidden, rec.dtype)])
            bias = wb + folded                                   # every bias but r ⊙ Rbh
            rb_h = rb[2 * hidden:] if before_reset else None

        def step(state, xs, d=d, wt=wt, bias=bias, rt_zr=rt_zr, rt_h=rt_h, rb_h=rb_h):
            h_prev, xw = state[0], rec.project(xs[0], wt, bias)
            zr = rec.gate(xw, 0), rec.gate(xw, 1)
            hzr = h_prev @ rt_zr                                 # (N, 2H)
            z = rec.activate(d, 0, zr[0] + hzr[..., :hidden])
            r_ = rec.activate(d, 0, zr[1] + hzr[..., hidden:])
            if before_reset:
                hh = h_prev @ rt_h
                if rb_h is not None:
                    hh = hh + rb_h
                candidate = rec.activate(d, 1, rec.gate(xw, 2) + r_ * hh)
            else:
                candidate = rec.activate(d, 1, rec.gate(xw, 2) + (r_ * h_prev) @ rt_h)
            h = (1.0 - z) * candidate + z * h_prev
            return [h], [h]
        (h,), (y,) = rec.run(d, step, [rec.initial_h[d]], [rec.x])
        ys.append(y)
        finals.append(h)
    return rec.outputs(ys, [finals])


@operator("LSTM")
def import_lstm(node, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None,
                p=None):
    """Gates i, o, f, c in ONNX's order, peepholes P (i, o, f) (see the module docstring);
    outputs Y, Y_h, Y_c."""
    rec = Recurrence(node, 4, ("Sigmoid", "Tanh", "Tanh"), x, w, r, b, sequence_lens,
                     initial_h)
    initial_c = rec.initial(initial_c)
    couple = node.attr("input_forget", 0)
    hidden = rec.hidden
    peepholes = None if p is None else api.lift(p)
    if peepholes is not None and tuple(np.shape(peepholes)) != (rec.directions, 3 * hidden):
        raise node.error(f"P has shape ({rec.directions}, {3 * hidden}) (directions, 3 · "
                         f"hidden), found {tuple(np.shape(peepholes))}")
    ys, hs, cs = [], [], []
    for d in range(rec.directions):
        wt, rt, wb, rb = rec.weights(d)
        bias = None if wb is None else wb + rb
        pi = po = pf = None
        if peepholes is not None:
            pi, po, pf = (peepholes[d][k * hidden:(k + 1) * hidden] for k in range(3))

        def step(state, xs, d=d, wt=wt, bias=bias, rt=rt, pi=pi, po=po, pf=pf):
            h_prev, c_prev = state
            gates = rec.project(xs[0], wt, bias) + h_prev @ rt   # (N, 4H)
            gi, go, gf, gc = (rec.gate(gates, k) for k in range(4))
            if pi is not None:
                gi, gf = gi + pi * c_prev, gf + pf * c_prev
            i = rec.activate(d, 0, gi)
            f = 1.0 - i if couple else rec.activate(d, 0, gf)
            c = f * c_prev + i * rec.activate(d, 1, gc)
            if po is not None:
                go = go + po * c
            h = rec.activate(d, 0, go) * rec.activate(d, 2, c, clipped=False)
            return [h, c], [h]
        (h, c), (y,) = rec.run(d, step, [rec.initial_h[d], initial_c[d]], [rec.x])
        ys.append(y)
        hs.append(h)
        cs.append(c)
    return rec.outputs(ys, [hs, cs])

