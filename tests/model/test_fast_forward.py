"""The network's CPU forward through ONNX Runtime: eager's probabilities, a graph exported
once per bundle and cached on disk, and eager PyTorch whenever that cannot hold."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from forestnet_model import fast_forward
from forestnet_model.fast_forward import graph_path, net_forward
from forestnet_model.model import ModelSpec, build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")
KEY = "forestnet-test"


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelSpec(encoder="resnet18")).eval()


@pytest.fixture(scope="module")
def graph(net) -> bytes:
    """``net`` exported once for the module: most tests are about what surrounds it."""
    return fast_forward.export_onnx(net)


@pytest.fixture
def exports(monkeypatch, graph) -> list[int]:
    """Counts exports, each handing back ``graph`` at once."""
    calls: list[int] = []

    def counted(*args, **kwargs) -> bytes:
        calls.append(1)
        return graph
    monkeypatch.setattr(fast_forward, "export_onnx", counted)
    return calls


def cached(folder: Path, graph: bytes, key: str = KEY) -> Path:
    path = graph_path(folder, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(graph)
    return path


def probabilities(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), 1).numpy()


def eager_logits(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet-b0"])
def test_onnxruntime_gives_eager_probabilities_at_any_batch_and_size(tmp_path, encoder, net,
                                                                     graph) -> None:
    if encoder == "resnet18":
        cached(tmp_path, graph)  # the module's real export
    else:  # EfficientNet's "same" padding: traced at 64 px, run at every multiple of 32
        torch.manual_seed(0)
        net = build_model(ModelSpec(encoder=encoder)).eval()
    forward = net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    assert forward.runtime == "onnxruntime"
    rng = np.random.default_rng(1)
    for shape in [(1, 6, 64, 64), (3, 6, 160, 96), (2, 6, 32, 224)]:
        x = rng.normal(0, 1, shape).astype(np.float32)
        got, expected = forward(x), eager_logits(net, x)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.abs(probabilities(got) - probabilities(expected)).max() <= 1e-3
        # Region means (a piece's driver): the mean over the window's pixels.
        pooled = [probabilities(z.mean(axis=(2, 3))) for z in (got, expected)]
        assert np.abs(pooled[0] - pooled[1]).max() <= 1e-3
    with pytest.raises(ValueError, match="pad to 64x96"):  # as eager smp refuses it
        forward(np.zeros((1, 6, 50, 90), np.float32))


def test_the_graph_is_exported_once_and_reused_from_the_cache(tmp_path, net, exports) -> None:
    first = net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    path = graph_path(tmp_path, KEY)
    assert first.runtime == "onnxruntime" and path.is_file() and exports == [1]
    written = path.stat().st_mtime_ns
    again = net_forward(net, KEY, CPU, "onnxruntime", tmp_path)  # another worker's load
    assert again.runtime == "onnxruntime" and exports == [1]
    assert path.stat().st_mtime_ns == written
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporaries left
    x = np.random.default_rng(2).normal(0, 1, (1, 6, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(first(x), again(x))
    # Another bundle (another weights hash) gets a graph of its own.
    net_forward(net, "forestnet-other", CPU, "onnxruntime", tmp_path)
    assert exports == [1, 1]


def test_a_damaged_cached_graph_is_exported_again_naming_the_file(tmp_path, net, exports,
                                                                  caplog) -> None:
    path = graph_path(tmp_path, KEY)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an onnx graph")
    with caplog.at_level(logging.WARNING, logger=fast_forward.__name__):
        forward = net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    assert forward.runtime == "onnxruntime" and exports == [1]
    assert f"{path}: cached ONNX graph unusable" in caplog.text
    assert path.stat().st_size > 1000
    net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    assert exports == [1]  # the rebuilt graph is the cache now


def test_a_cached_graph_that_disagrees_with_eager_is_replaced(tmp_path, net, graph, exports,
                                                              caplog) -> None:
    torch.manual_seed(1)
    other = build_model(ModelSpec(encoder="resnet18")).eval()  # other weights, same key
    cached(tmp_path, graph)  # net's graph, under other's key
    with caplog.at_level(logging.WARNING, logger=fast_forward.__name__):
        forward = net_forward(other, KEY, CPU, "onnxruntime", tmp_path)
    assert f"{graph_path(tmp_path, KEY)}: cached ONNX graph unusable" in caplog.text
    assert "differ from eager" in caplog.text and exports == [1]
    # The export (here: net's graph again) disagrees too: eager, and nothing cached.
    assert forward.runtime == "eager" and "differ from eager" in forward.reason


def test_a_graph_that_disagrees_with_eager_is_never_cached(tmp_path, net, exports,
                                                           monkeypatch) -> None:
    monkeypatch.setattr(fast_forward, "PARITY_TOLERANCE", -1.0)  # no graph can pass
    forward = net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    assert forward.runtime == "eager" and "differ from eager" in forward.reason
    assert not graph_path(tmp_path, KEY).exists()


def test_a_failed_export_falls_back_to_eager_with_the_reason(tmp_path, net, monkeypatch,
                                                            caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")
    monkeypatch.setattr(fast_forward, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger=fast_forward.__name__):
        forward = net_forward(net, KEY, CPU, "auto", tmp_path)
    assert forward.runtime == "eager" and "unsupported operator" in forward.reason
    assert "falling back to eager PyTorch" in caplog.text
    x = np.zeros((1, 6, 64, 64), np.float32)
    np.testing.assert_allclose(forward(x), eager_logits(net, x), atol=1e-5)


def test_an_unwritable_cache_keeps_the_graph_in_memory(tmp_path, net, exports, caplog
                                                       ) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    with caplog.at_level(logging.WARNING, logger=fast_forward.__name__):
        forward = net_forward(net, KEY, CPU, "onnxruntime", blocked)
    assert forward.runtime == "onnxruntime" and "cannot cache the ONNX graph" in caplog.text


def test_auto_is_eager_only_on_cuda_or_without_onnxruntime(tmp_path, net, exports,
                                                          monkeypatch) -> None:
    assert net_forward(net, KEY, CPU, "auto", tmp_path).runtime == "onnxruntime"
    assert net_forward(net, KEY, CPU, "eager", tmp_path).runtime == "eager"
    cuda = net_forward(net, KEY, torch.device("cuda"), "onnxruntime", tmp_path)
    assert cuda.runtime == "eager"  # bf16 autocast and channels_last, never an export
    monkeypatch.setattr(fast_forward, "_missing_packages", lambda: ["onnxruntime"])
    missing = net_forward(net, KEY, CPU, "auto", tmp_path)
    assert missing.runtime == "eager" and missing.reason == "onnxruntime not installed"
    with pytest.raises(ImportError, match="set the runtime to 'eager' or 'auto'"):
        net_forward(net, KEY, CPU, "onnxruntime", tmp_path)
    with pytest.raises(ValueError, match="valid: auto, eager, onnxruntime"):
        net_forward(net, KEY, CPU, "openvino", tmp_path)


def test_the_default_cache_is_outside_the_bundle(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FORESTNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fast_forward.cache_dir() == tmp_path / "forestnet"
    monkeypatch.setenv("FORESTNET_CACHE_DIR", str(tmp_path / "mine"))
    assert fast_forward.cache_dir() == tmp_path / "mine"
