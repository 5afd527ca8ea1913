"""One way to open an onnxruntime session, shared by every ONNX-backed stage."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort


def onnx_session(source: str | Path | bytes, num_threads: int,
                 providers: Sequence[str] | None = None) -> ort.InferenceSession:
    """Session on a model file or its bytes; providers default to CUDA (when present) then CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1  # these graphs are sequential: more pools only add idle threads
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                providers=list(providers))
