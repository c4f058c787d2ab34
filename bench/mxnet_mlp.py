"""flux's MXNet backend vs MXNet written by hand, side by side in one run.

1. MLP training step (64→128→128→10, batch 128, float32, softmax cross-entropy from logits,
   SGD): `flux.train` on `flux.mxnet(model)` vs the same model written with `mx.sym` and run by
   an `mx.mod.Module` (`forward_backward` + `update`, the loss read back each step) and as a
   hybridized Gluon block (`autograd.record`, `backward`, `Trainer.step`). Target:
   flux / min(module, gluon) ≤ 1.05.
2. Inference call overhead on a tiny model (Affine(4, 2), one point): `flux.mxnet(model)(x)`
   vs an executor bound by hand (`simple_bind`), input copied in and output read back as
   NumPy. Target ≤ 1.5.

    python bench/mxnet_mlp.py [--steps 200] [--repeats 7]
"""
from __future__ import annotations


import mxnet as mx
import numpy as np

import flux
from _timing import (classification_batch, print_ratio, print_times, side_by_side,
                     steps_and_repeats)

SIZES, BATCH, LR = (64, 128, 128, 10), 128, 0.01


def flux_contender(x, y):
    flux.seed(0)
    model = flux.Chain(flux.Affine(64, 128), flux.relu, flux.Affine(128, 128), flux.relu,
                       flux.Affine(128, 10))
    compiled = flux.mxnet(model)
    opt = flux.SGD(LR)
    data = [(x, y)]

    def run(steps):
        flux.train(compiled, data * steps, loss=flux.logitcrossentropy, opt=opt)
    return run


def mlp_symbol():
    h = mx.sym.Variable("data")
    for i, n in enumerate(SIZES[1:]):
        h = mx.sym.FullyConnected(h, num_hidden=n, name=f"fc{i}")
        if i < len(SIZES) - 2:
            h = mx.sym.Activation(h, act_type="relu")
    return h


def module_contender(x, y):
    label = mx.sym.Variable("label")
    logits = mlp_symbol()
    loss = mx.sym.MakeLoss(-mx.sym.sum(label * mx.sym.log_softmax(logits)) / BATCH)
    module = mx.mod.Module(loss, data_names=["data"], label_names=["label"])
    module.bind(data_shapes=[("data", x.shape)], label_shapes=[("label", y.shape)])
    module.init_params(mx.init.Normal(0.01))
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": LR,
                                                             "rescale_grad": 1.0})
    batch = mx.io.DataBatch([mx.nd.array(x)], [mx.nd.array(y)])

    def run(steps):
        for _ in range(steps):
            batch.data[0][:] = x                   # the data comes from NumPy, as for flux
            batch.label[0][:] = y
            module.forward_backward(batch)
            module.update()
            float(module.get_outputs()[0].asnumpy()[0])   # the loss back in Python
    return run


def gluon_contender(x, y):
    from mxnet import autograd, gluon
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(128, activation="relu", in_units=64),
            gluon.nn.Dense(128, activation="relu", in_units=128),
            gluon.nn.Dense(10, in_units=128))
    net.initialize(mx.init.Normal(0.01))
    net.hybridize(static_alloc=True, static_shape=True)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss(sparse_label=False)
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": LR})
    xs, ys = mx.nd.array(x), mx.nd.array(y)

    def run(steps):
        for _ in range(steps):
            xs[:] = x
            ys[:] = y
            with autograd.record():
                loss = loss_fn(net(xs), ys).mean()
            loss.backward()
            trainer.step(1)
            float(loss.asscalar())
    return run


def overhead_contenders():
    flux.seed(0)
    model = flux.Affine(4, 2)
    compiled = flux.mxnet(model)
    data = mx.sym.Variable("data")
    W, b = mx.sym.Variable("W"), mx.sym.Variable("b")
    out = mx.sym.broadcast_add(mx.sym.dot(mx.sym.reshape(data, (1, 4)), W), b)
    executor = out.simple_bind(mx.cpu(), data=(4,), W=(4, 2), b=(2,), grad_req="null")
    executor.arg_dict["W"][:] = model.W.value
    executor.arg_dict["b"][:] = model.b.value
    x = np.ones(4, np.float32)

    def run_flux(calls):
        for _ in range(calls):
            compiled(x)

    def bare(x):
        executor.arg_dict["data"][:] = x
        return executor.forward(is_train=False)[0].asnumpy().reshape(2)

    def run_bare(calls):
        for _ in range(calls):
            bare(x)
    np.testing.assert_allclose(compiled(x), bare(x), rtol=1e-6)     # the same computation
    return {"flux.mxnet": run_flux, "executor": run_bare}


def main():
    args = steps_and_repeats()
    x, y = classification_batch(BATCH, SIZES[0], SIZES[-1])
    contenders = {"flux.mxnet": flux_contender(x, y), "module": module_contender(x, y),
                  "gluon": gluon_contender(x, y)}
    for run in contenders.values():
        run(5)                                      # bind, trace and warm up
    times = side_by_side(contenders, args.repeats, args.steps)
    print_times(f"MLP training step {SIZES} batch {BATCH} (median of {args.repeats} x "
                f"{args.steps}):", times)
    print_ratio(times, "flux.mxnet", ["module", "gluon"], "target ≤ 1.05")

    times = side_by_side(overhead_contenders(), args.repeats, 20 * args.steps)
    print_times("Call overhead, Affine(4, 2) on one point:", times)
    print_ratio(times, "flux.mxnet", "executor", "target ≤ 1.5")


if __name__ == "__main__":
    main()
