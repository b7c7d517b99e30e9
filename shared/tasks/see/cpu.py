"""Vision on CPU with weights that ship inside their packages: OCR
(RapidOCR's PP-OCR ONNX models) and pose (MediaPipe's bundled model), and
image description through an OpenAI-compatible vision model."""

from __future__ import annotations

import base64
import mimetypes

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError, require
from .vision import Box


class Line(TypedDict):
    text: str
    confidence: float
    box: Box


class Ocr(TypedDict):
    text: str
    lines: list[Line]


@task("ocr.read", category="see", capabilities=["vision", "ocr"], timeout=300)
def ocr_read(image_path: str, min_confidence: float = 0.5) -> Ocr:
    """Reads the text in an image (RapidOCR, PP-OCRv4 on ONNX Runtime; CPU)."""
    RapidOCR = require("ocr.read", "rapidocr-onnxruntime", "rapidocr_onnxruntime").RapidOCR
    path = resolve(image_path, "image_path")
    found, _ = RapidOCR()(str(path))
    lines: list[Line] = []
    for quad, text, conf in found or []:
        if float(conf) < min_confidence:
            continue
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        lines.append({"text": text, "confidence": float(conf),
                      "box": {"x": float(min(xs)), "y": float(min(ys)), "width": float(max(xs) - min(xs)), "height": float(max(ys) - min(ys))}})
    return {"text": "\n".join(line["text"] for line in lines), "lines": lines}


class Keypoint(TypedDict):
    name: str
    x: float
    y: float
    visibility: float


class Pose(TypedDict):
    found: bool
    keypoints: list[Keypoint]


@task("pose.detect", category="see", capabilities=["vision"], timeout=120)
def pose_detect(image_path: str) -> Pose:
    """Finds a person's body keypoints (MediaPipe Pose, bundled model; CPU). Coordinates are 0-1."""
    mp = require("pose.detect", "mediapipe==0.10.21", "mediapipe")
    path = resolve(image_path, "image_path")
    import numpy as np
    from PIL import Image

    image = np.array(Image.open(path).convert("RGB"))
    with mp.solutions.pose.Pose(static_image_mode=True) as pose:
        result = pose.process(image)
    if not result.pose_landmarks:
        return {"found": False, "keypoints": []}
    names = [lm.name.lower() for lm in mp.solutions.pose.PoseLandmark]
    points: list[Keypoint] = [{"name": names[i], "x": float(p.x), "y": float(p.y), "visibility": float(p.visibility)}
                              for i, p in enumerate(result.pose_landmarks.landmark)]
    return {"found": True, "keypoints": points}


class Description(TypedDict):
    description: str
    model: str


@task("image.describe", category="see", capabilities=["vision", "llm", "network"], timeout=300)
def image_describe(image_path: str, prompt: str = "Describe this image in two sentences.", model: str = "gpt-4o-mini") -> Description:
    """Describes an image with an OpenAI-compatible vision model (OPENAI_BASE_URL honoured)."""
    from ..think.openai_tasks import _call, _client

    path = resolve(image_path, "image_path")
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    if not mime.startswith("image/"):
        raise TaskError(f"`image_path` {image_path}: not an image")
    data = base64.b64encode(path.read_bytes()).decode()
    client = _client("image.describe")
    r = _call("image.describe", lambda: client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}]}]))
    return {"description": (r.choices[0].message.content or "").strip(), "model": r.model}
