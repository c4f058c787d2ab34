"""The Param side of backends that keep parameters themselves: `version`, `peek`, `defer`.

A backend records each Param's `version` when it copies the value in, and copies again only
when the version moved; after training on its side it calls `defer(source)`, and the Param
fetches the value (``source.fetch(p)``) the next time anyone reads it."""
import numpy as np

import flux
from flux import Param


class Store:
    """A stand-in backend copy of Params: the values it holds, and how often it was asked."""

    def __init__(self):
        self.values = {}
        self.fetched = 0

    def fetch(self, p):
        self.fetched += 1
        return self.values[id(p)]


def test_reading_value_hands_the_array_out_and_moves_the_version():
    p = Param(np.zeros(3))
    v = p.version
    array = p.value
    assert p.version > v
    array[0] = 5                       # a write through the handed-out array is seen
    assert p.peek()[0] == 5


def test_peek_and_shape_reads_leave_the_version_alone():
    p = Param(np.zeros((2, 3)))
    v = p.version
    p.peek(), p.shape, p.dtype, p.size, len(p), repr(p)
    assert p.version == v


def test_assignment_moves_the_version():
    p = Param(np.zeros(3))
    v = p.version
    p.value = [1, 2, 3]
    assert p.version > v
    np.testing.assert_array_equal(p.peek(), [1, 2, 3])


def test_optimiser_updates_and_load_move_the_version(tmp_path):
    model = flux.Affine(2, 1)
    versions = [p.version for p in flux.params(model).values()]
    flux.back(model, np.ones(1, np.float32), np.ones(2, np.float32))
    before = [p.version for p in flux.params(model).values()]
    flux.update(model, flux.SGD(0.1))
    after = [p.version for p in flux.params(model).values()]
    assert all(a > b for a, b in zip(after, before))
    path = tmp_path / "m.npz"
    flux.save(model, path)
    saved = [p.version for p in flux.params(model).values()]
    assert saved == after                              # saving only reads
    flux.load(model, path)
    assert all(a > b for a, b in zip([p.version for p in flux.params(model).values()], saved))
    assert versions


def test_a_deferred_param_fetches_once_when_read_and_keeps_its_array():
    p = Param(np.zeros(3))
    kept = p.value                      # an array obtained before the backend took over
    store = Store()
    store.values[id(p)] = np.array([1, 2, 3], np.float32)
    v = p.defer(store)
    assert v == p.version and store.fetched == 0
    np.testing.assert_array_equal(p.value, [1, 2, 3])
    assert store.fetched == 1
    assert p.peek() is kept             # fetched into the same array
    p.value, p.peek()
    assert store.fetched == 1           # fetched once


def test_assigning_a_deferred_param_drops_the_backend_copy():
    p = Param(np.zeros(3))
    store = Store()
    p.defer(store)
    p.value = np.full(3, 7.0)
    np.testing.assert_array_equal(p.value, 7.0)
    assert store.fetched == 0


def test_numpy_backend_and_saving_see_deferred_values(tmp_path):
    model = flux.Affine(2, 1)
    store = Store()
    for p in flux.params(model).values():
        store.values[id(p)] = np.ones(p.shape, p.dtype)
        p.defer(store)
    assert model(np.ones(2, np.float32))[0] == 3.0      # W·1 + b with ones everywhere
    for p in flux.params(model).values():
        store.values[id(p)] = np.full(p.shape, 2, p.dtype)
        p.defer(store)
    flux.save(model, tmp_path / "m.npz")
    fresh = flux.Affine(2, 1)
    flux.load(fresh, tmp_path / "m.npz")
    np.testing.assert_array_equal(fresh.W.value, 2)


def test_copies_and_pickles_take_the_current_value_not_the_backend():
    import copy
    import pickle
    p = Param(np.zeros(3))
    store = Store()
    store.values[id(p)] = np.array([1, 2, 3], np.float32)
    p.defer(store)
    q = copy.deepcopy(p)
    assert q._source is None and p._source is None
    np.testing.assert_array_equal(q.value, [1, 2, 3])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(p)).value, [1, 2, 3])


class StateStore:
    def fetch_state(self, opt):
        return {"slots": "from the backend"}


def test_copies_of_an_optimiser_take_its_current_state():
    import copy
    opt = flux.Momentum(0.1)
    v = opt.defer_state(StateStore())
    assert v == opt.state_version
    twin = copy.deepcopy(opt)
    assert twin.state == {"slots": "from the backend"} == opt.state
    assert twin._state_source is None
