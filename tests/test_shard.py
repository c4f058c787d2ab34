"""flux.shard gives each of several workers its share of the data, and only the chief (rank 0)
of workers training one model together writes checkpoints (issue 18's core contract: a
backend training data-parallel sets its compiled model's `rank` and `workers`)."""
import numpy as np
import pytest

import flux


def test_the_workers_shares_cover_the_data_once_in_step_order():
    data = list(range(11))
    shares = [flux.shard(data, rank=r, workers=3) for r in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]       # 9, 10: not every worker's
    assert sorted(sum(shares, [])) == list(range(9))
    for step in range(3):                                    # step i reads i·workers + rank
        assert [s[step] for s in shares] == [3 * step + r for r in range(3)]


def test_an_iterator_is_shared_lazily():
    got = flux.shard(iter(range(7)), rank=1, workers=2)
    assert not isinstance(got, list) and list(got) == [1, 3, 5]


def test_rank_and_workers_come_from_the_compiled_model():
    model = flux.Affine(2, 2)
    compiled = flux.compile(model)
    assert (compiled.rank, compiled.workers) == (0, 1)
    assert flux.shard([1, 2, 3], compiled) == [1, 2, 3]
    compiled.rank, compiled.workers = 1, 2
    assert flux.shard([1, 2, 3, 4, 5], compiled) == [2, 4]


@pytest.mark.parametrize("kwargs, error", [
    ({}, flux.FluxTypeError), ({"rank": 0}, flux.FluxTypeError),
    ({"rank": 2, "workers": 2}, flux.FluxValueError),
    ({"rank": -1, "workers": 2}, flux.FluxValueError),
    ({"rank": 0, "workers": 0}, flux.FluxValueError),
    ({"rank": 0.5, "workers": 2}, flux.FluxTypeError),
])
def test_bad_ranks_are_refused(kwargs, error):
    with pytest.raises(error, match="shard"):
        flux.shard([1, 2], **kwargs)


def test_only_the_chief_writes_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(4, 2)).astype("f"), rng.normal(size=(4, 2)).astype("f"))] * 4
    worker = flux.compile(flux.Affine(2, 2))
    worker.rank, worker.workers = 1, 2
    flux.train(worker, data, checkpoint=tmp_path / "w.ckpt", every=1)
    assert not (tmp_path / "w.ckpt").exists()
    chief = flux.compile(flux.Affine(2, 2))
    chief.rank, chief.workers = 0, 2
    flux.train(chief, data, checkpoint=tmp_path / "c.ckpt", every=1)
    assert (tmp_path / "c.ckpt").exists()
