"""Frame embeddings from an ONNX model named by settings, run with ONNX Runtime.

The registry maps a model type (``resnet50``) to a file in the model directory
(``resnet50.onnx``). Nothing is downloaded: when the file is absent the result says so and
the other stages still complete. Frames are resized to 224x224, normalised with the
ImageNet mean and standard deviation, and run in batches.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from vidgate.processing.models import EmbeddingResult

INPUT_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ModelRegistry:
    """Model type -> ONNX file in ``directory``; ``overrides`` maps a type to another file name."""

    def __init__(self, directory: Path, overrides: dict[str, str] | None = None) -> None:
        self.directory = directory
        self.overrides = overrides or {}

    def path_for(self, model_type: str) -> Path | None:
        """The model file, or None for a name that is not a plain model name."""
        if not _MODEL_NAME.match(model_type):
            return None
        name = self.overrides.get(model_type, f"{model_type}.onnx")
        return self.directory / Path(name).name


def preprocess(frames: list[np.ndarray]) -> np.ndarray:
    """224x224 RGB uint8 frames -> NCHW float32, scaled to 0-1 and ImageNet-normalised."""
    batch = np.stack(frames).astype(np.float32) / 255.0
    batch = batch.transpose(0, 3, 1, 2)
    return (batch - IMAGENET_MEAN) / IMAGENET_STD


class Embedder:
    """Collects frames and runs them through the model ``batch_size`` at a time."""

    def __init__(self, session: Any, model_type: str, model_file: Path, batch_size: int) -> None:
        self.session = session
        self.model_type = model_type
        self.model_file = model_file
        self.batch_size = batch_size
        self.input_name = session.get_inputs()[0].name
        self._pending: list[np.ndarray] = []
        self._sum: np.ndarray | None = None
        self.count = 0

    @classmethod
    def open(cls, registry: ModelRegistry, model_type: str, batch_size: int) -> Embedder | EmbeddingResult:
        """An embedder, or the plain reason there is none."""
        path = registry.path_for(model_type)
        if path is None:
            return EmbeddingResult(status="unavailable", model_type=model_type, reason="not a valid model name")
        if not path.is_file():
            return EmbeddingResult(
                status="unavailable",
                model_type=model_type,
                model_file=str(path),
                reason=f"model file {path} not found; see the README to export {model_type} to ONNX",
            )
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            return EmbeddingResult(
                status="failed", model_type=model_type, model_file=str(path), reason=f"model cannot be loaded: {exc}"
            )
        return cls(session, model_type, path, batch_size)

    def add(self, rgb224: np.ndarray) -> None:
        self._pending.append(rgb224)
        if len(self._pending) >= self.batch_size:
            self._run()

    def _run(self) -> None:
        if not self._pending:
            return
        outputs = self.session.run(None, {self.input_name: preprocess(self._pending)})[0]
        vectors = np.asarray(outputs, dtype=np.float64).reshape(len(self._pending), -1)
        self._sum = vectors.sum(axis=0) if self._sum is None else self._sum + vectors.sum(axis=0)
        self.count += len(self._pending)
        self._pending.clear()

    def finish(self) -> EmbeddingResult:
        self._run()
        if self._sum is None or not self.count:
            return EmbeddingResult(
                status="failed", model_type=self.model_type, model_file=str(self.model_file), reason="no frames"
            )
        mean = self._sum / self.count
        norm = float(np.linalg.norm(mean)) or 1.0
        return EmbeddingResult(
            status="ok",
            model_type=self.model_type,
            model_file=str(self.model_file),
            dimension=int(mean.shape[0]),
            frames=self.count,
            video_embedding=[round(float(v), 6) for v in mean / norm],
        )
