"""Models made by PyTorch's ONNX exporter (the TorchScript one, ``dynamo=False``, which needs
no onnxscript), written here into tmp_path, imported with flux.onnx.load and compared with
PyTorch's own outputs at two batch sizes (the files' batch axis is dynamic); one imported
model trains with flux.train."""
import warnings

import numpy as np
import pytest

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import flux  # noqa: E402
import flux.onnx  # noqa: E402


class CNN(torch.nn.Module):
    """Conv → BatchNorm → ReLU → MaxPool → Flatten → Linear."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc = torch.nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


class Recurrent(torch.nn.Module):
    """An LSTM or GRU over (batch, time, features), then a Linear on the last step."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = cell(5, 7, batch_first=True)
        self.fc = torch.nn.Linear(7, 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class Encoder(torch.nn.Module):
    """One TransformerEncoderLayer (called with is_causal=False: the exporter needs a bool)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)

    def forward(self, x):
        return self.layer(x, src_mask=None, is_causal=False)


def mlp():
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def randomise_batch_norm(model):
    """Non-trivial running statistics, so that eval mode is tested for real."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


MODELS = {
    "mlp": (mlp, (3, 4), (5, 4)),
    "cnn": (lambda: randomise_batch_norm(CNN()), (2, 2, 8, 8), (3, 2, 8, 8)),
    "lstm": (lambda: Recurrent(torch.nn.LSTM), (2, 6, 5), (3, 6, 5)),
    "gru": (lambda: Recurrent(torch.nn.GRU), (2, 6, 5), (3, 6, 5)),
    "transformer": (Encoder, (2, 5, 16), (3, 5, 16)),
}


def exported(make, shape, path):
    torch.manual_seed(0)
    model = make().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")           # (the legacy exporter's deprecation notice)
        torch.onnx.export(model, (torch.randn(*shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return model


@pytest.mark.parametrize("name", list(MODELS))
def test_a_torch_model_imports_and_gives_pytorchs_outputs(name, tmp_path):
    make, first, second = MODELS[name]
    model = exported(make, first, tmp_path / f"{name}.onnx")
    m = flux.onnx.load(tmp_path / f"{name}.onnx")
    assert set(flux.params(m)) >= {k for k, v in model.named_parameters()
                                   if k in m.initializer_paths}
    for shape in (first, second):
        x = np.random.default_rng(sum(shape)).normal(size=shape).astype("f")
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        flux.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-5, what=name)


def test_the_imported_parameters_keep_pytorchs_names(tmp_path):
    model = exported(mlp, (3, 4), tmp_path / "mlp.onnx")
    m = flux.onnx.load(tmp_path / "mlp.onnx")
    assert list(flux.params(m)) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    np.testing.assert_array_equal(getattr(m, "0.weight").value,
                                  model[0].weight.detach().numpy())


def test_an_imported_torch_model_trains(tmp_path):
    exported(lambda: randomise_batch_norm(CNN()), (2, 2, 8, 8), tmp_path / "cnn.onnx")
    m = flux.onnx.load(tmp_path / "cnn.onnx")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 2, 8, 8)).astype("f")
    y = rng.normal(size=(16, 3)).astype("f")
    losses = []
    flux.train(m, [(x, y)] * 20, loss=flux.mse, opt=flux.ADAM(lr=0.01),
               cb=lambda: losses.append(float(flux.mse(m(x), y))))
    assert losses[-1] < 0.5 * losses[0]
