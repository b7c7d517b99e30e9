"""Vision tasks. The GPU models (YOLO, Florence-2) cannot run here: their
weights are not reachable offline; their code is real and the tests cover the
input checks around the model call. faces.detect runs on CPU with the Haar
cascade OpenCV ships."""

from __future__ import annotations

import threading
from functools import lru_cache

from typing_extensions import TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError, require


_CV2_LOCK = threading.Lock()


def cv2_module(task_name: str):
    """OpenCV, its first import under a lock: cv2's loader swaps modules in
    sys.modules while it runs, and steps of one worker run in threads."""
    with _CV2_LOCK:
        return require(task_name, "opencv-python-headless", "cv2")


class Box(TypedDict):
    x: float
    y: float
    width: float
    height: float


class Detection(TypedDict):
    label: str
    confidence: float
    box: Box


class Detections(TypedDict):
    detections: list[Detection]
    width: int
    height: int


@lru_cache(maxsize=4)
def _yolo(model: str):
    return require("yolo.detect", "ultralytics", "ultralytics").YOLO(model)


@task("yolo.detect", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def yolo_detect(image_path: str, confidence: float = 0.25, model: str = "yolov8n.pt") -> Detections:
    """Detects objects in an image with Ultralytics YOLO (boxes in pixels)."""
    if not 0 < confidence < 1:
        raise TaskError("`confidence` must be between 0 and 1")
    path = resolve(image_path, "image_path")
    result = _yolo(model)(str(path), conf=confidence, verbose=False)[0]
    h, w = result.orig_shape
    out: list[Detection] = []
    for b in result.boxes:
        x1, y1, x2, y2 = (float(v) for v in b.xyxy[0])
        out.append({"label": result.names[int(b.cls)], "confidence": float(b.conf),
                    "box": {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}})
    return {"detections": out, "width": int(w), "height": int(h)}


class Caption(TypedDict):
    caption: str


@lru_cache(maxsize=1)
def _florence(model_id: str):
    torch = require("florence.caption", "torch", "torch")
    transformers = require("florence.caption", "transformers", "transformers")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True).to(device)
    processor = transformers.AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    return model, processor, device


@task("florence.caption", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def florence_caption(image_path: str, detail: str = "detailed", model_id: str = "microsoft/Florence-2-base") -> Caption:
    """Captions an image with Florence-2 (`detail`: brief, detailed or more_detailed)."""
    prompts = {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more_detailed": "<MORE_DETAILED_CAPTION>"}
    if detail not in prompts:
        raise TaskError(f"`detail` must be one of {', '.join(prompts)}")
    path = resolve(image_path, "image_path")
    from PIL import Image

    model, processor, device = _florence(model_id)
    image = Image.open(path).convert("RGB")
    prompt = prompts[detail]
    inputs = processor(text=prompt, images=image, return_tensors="pt").to(device)
    ids = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=256)
    text = processor.batch_decode(ids, skip_special_tokens=False)[0]
    parsed = processor.post_process_generation(text, task=prompt, image_size=image.size)
    return {"caption": str(parsed.get(prompt, "")).strip()}


class Face(TypedDict):
    box: Box


class Faces(TypedDict):
    faces: list[Face]
    count: int
    width: int
    height: int


@task("faces.detect", category="see", capabilities=["vision"], timeout=120)
def faces_detect(image_path: str, min_size: int = 30, scale_factor: float = 1.1, min_neighbors: int = 5) -> Faces:
    """Detects frontal faces with OpenCV's bundled Haar cascade (CPU, no download)."""
    cv2 = cv2_module("faces.detect")
    if scale_factor <= 1.0:
        raise TaskError("`scale_factor` must be above 1.0")
    path = resolve(image_path, "image_path")
    img = cv2.imread(str(path))
    if img is None:
        raise TaskError(f"`image_path` {image_path}: not an image OpenCV can read")
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = cascade.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size))
    faces: list[Face] = [{"box": {"x": float(x), "y": float(y), "width": float(w), "height": float(h)}} for (x, y, w, h) in found]
    return {"faces": faces, "count": len(faces), "width": int(img.shape[1]), "height": int(img.shape[0])}
