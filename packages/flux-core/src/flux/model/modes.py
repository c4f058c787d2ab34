"""Layer modes: layers that behave differently while training (Dropout, BatchNorm) declare
``__flux_modal__ = True`` and keep ``active``: None (auto), True (train) or False (test).

In auto mode a layer trains inside `flux.train`, `flux.back` and every compiled training step
(graphs traced with ``trace.training``) and tests in ordinary calls. `testmode` / `trainmode`
force a mode on every modal layer of a model (compiled copies share the layers);
``testmode(model, None)`` returns to auto. Graphs are traced for one mode: changing it
re-traces (the layers' `active` is a field, so assigning it moves the structure version).
"""
from __future__ import annotations

from flux.errors import FluxTypeError
from flux.ir.trace import current_trace
from flux.model.walk import walk

__all__ = ["testmode", "trainmode", "training", "is_modal"]


def is_modal(obj) -> bool:
    return getattr(type(obj), "__flux_modal__", False)


def training(layer) -> bool:
    """Whether `layer` behaves as in training now: its forced mode, else the trace's."""
    if layer.active is not None:
        return layer.active
    trace = current_trace()
    return trace is not None and trace.training


def testmode(model, mode=True):
    """Force test behaviour (``mode=True``), training behaviour (False) or auto (None) on
    every Dropout, BatchNorm and other modal layer of `model`; returns `model`.

    >>> import flux, numpy as np
    >>> m = flux.Chain(flux.Dropout(0.5))
    >>> flux.trainmode(m); m(np.ones(4)).shape
    Chain(Dropout(0.5))
    (4,)
    >>> flux.testmode(m)(np.ones(4))
    array([1., 1., 1., 1.])
    """
    if mode is not None and not isinstance(mode, bool):
        raise FluxTypeError(f"testmode(model, mode): mode is True (test), False (train) or "
                            f"None (auto), found {mode!r}")
    target = model.model if getattr(model, "__flux_compiled__", False) else model
    for _, obj in walk(target):
        if is_modal(obj):
            obj.active = None if mode is None else not mode
    return model


def trainmode(model, mode=True):
    """Force training behaviour (``mode=True``), test behaviour (False) or auto (None) on
    every modal layer of `model` (see `testmode`); returns `model`."""
    if mode is not None and not isinstance(mode, bool):
        raise FluxTypeError(f"trainmode(model, mode): mode is True (train), False (test) or "
                            f"None (auto), found {mode!r}")
    return testmode(model, None if mode is None else not mode)
