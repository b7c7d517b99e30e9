"""Vision tasks. The GPU models (YOLO, Florence-2) cannot run here: their
weights are not reachable offline; their code is real and the tests cover the
input checks around the model call. faces.detect runs on CPU with the Haar
cascade OpenCV ships. Each takes one image, or scenes.detect's scenes (one
result per keyframe; see keyframes.py)."""

from __future__ import annotations

import threading
from functools import lru_cache

from typing_extensions import NotRequired, TypedDict

from ..context import resolve
from ..decorator import task
from ..errors import TaskError, require
from .keyframes import IMAGE_PIPE, SceneRef, per_image


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


class FrameInfo(TypedDict):
    index: int
    start: float | None
    end: float | None
    keyframe: str


class FrameDetections(FrameInfo, Detections):
    pass


class SceneDetections(TypedDict):
    frames: list[FrameDetections]


def yolo_model(task_name: str, model: str):
    """An Ultralytics model by weights name (yolov8n.pt, yolov8n-seg.pt, ...), loaded once."""
    require(task_name, "ultralytics", "ultralytics")
    return _yolo(model)


@lru_cache(maxsize=4)
def _yolo(model: str):
    import ultralytics

    return ultralytics.YOLO(model)


def check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise TaskError("`confidence` must be between 0 and 1")


def yolo_predict(task_name: str, model: str, image_path: str, confidence: float):
    """One YOLO prediction on a working-folder image: (its result, width, height)."""
    check_confidence(confidence)
    path = resolve(image_path, "image_path")
    result = yolo_model(task_name, model)(str(path), conf=confidence, verbose=False)[0]
    h, w = result.orig_shape
    return result, int(w), int(h)


def box_of(xyxy) -> Box:
    """A box in pixels from a model's (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return {"x": x1, "y": y1, "width": x2 - x1, "height": y2 - y1}


@task("yolo.detect", category="see", capabilities=["vision"], gpu="T4", timeout=300, pipe=IMAGE_PIPE)
def yolo_detect(image_path: str | None = None, scenes: list[SceneRef] | None = None, confidence: float = 0.25,
                model: str = "yolov8n.pt") -> Detections | SceneDetections:
    """Detects objects in an image, or in every scene's keyframe, with Ultralytics YOLO (boxes in pixels)."""
    check_confidence(confidence)

    def one(image: str) -> Detections:
        result, w, h = yolo_predict("yolo.detect", model, image, confidence)
        out: list[Detection] = [{"label": result.names[int(b.cls)], "confidence": float(b.conf), "box": box_of(b.xyxy[0])}
                                for b in result.boxes]
        return {"detections": out, "width": w, "height": h}

    return per_image("yolo.detect", image_path, scenes, one)


class Caption(TypedDict):
    caption: str
    scene_index: NotRequired[int]


def _florence(task_name: str, model_id: str):
    require(task_name, "torch", "torch")
    require(task_name, "transformers", "transformers")
    return _florence_model(model_id)


@lru_cache(maxsize=1)
def _florence_model(model_id: str):
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True).to(device)
    processor = transformers.AutoProcessor.from_pretrained(model_id, trust_remote_code=True)
    return model, processor, device


def florence(task_name: str, image_path: str, prompt: str, model_id: str) -> tuple[object, tuple[int, int]]:
    """Florence-2 run with one task prompt (`<CAPTION>`, `<OD>`, `<OCR_WITH_REGION>`, ...): its parsed answer and the image size."""
    path = resolve(image_path, "image_path")
    from PIL import Image

    model, processor, device = _florence(task_name, model_id)
    image = Image.open(path).convert("RGB")
    inputs = processor(text=prompt, images=image, return_tensors="pt").to(device)
    ids = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=1024)
    text = processor.batch_decode(ids, skip_special_tokens=False)[0]
    return processor.post_process_generation(text, task=prompt, image_size=image.size).get(prompt), image.size


_CAPTIONS = {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "more_detailed": "<MORE_DETAILED_CAPTION>"}


def check_detail(detail: str) -> str:
    """The Florence-2 prompt of a caption's `detail`."""
    if detail not in _CAPTIONS:
        raise TaskError(f"`detail` must be one of {', '.join(_CAPTIONS)}")
    return _CAPTIONS[detail]


@task("florence.caption", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def florence_caption(image_path: str, detail: str = "detailed", model_id: str = "microsoft/Florence-2-base",
                     scene_index: int | None = None) -> Caption:
    """Captions an image with Florence-2 (`detail`: brief, detailed or more_detailed).

    `scene_index` is carried through (the seed's forEach over scenes passes it)."""
    prompt = check_detail(detail)
    parsed, _ = florence("florence.caption", image_path, prompt, model_id)
    out: Caption = {"caption": str(parsed or "").strip()}
    if scene_index is not None:
        out["scene_index"] = scene_index
    return out


class Region(TypedDict):
    label: str
    box: Box


class Regions(TypedDict):
    regions: list[Region]
    width: int
    height: int


@task("florence.detect", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def florence_detect(image_path: str, dense: bool = False, model_id: str = "microsoft/Florence-2-base") -> Regions:
    """Dense detection with Florence-2: labelled boxes (`dense`: a short caption per region instead of a class)."""
    prompt = "<DENSE_REGION_CAPTION>" if dense else "<OD>"
    parsed, (w, h) = florence("florence.detect", image_path, prompt, model_id)
    found = parsed if isinstance(parsed, dict) else {}
    regions: list[Region] = [{"label": str(label), "box": box_of(b)}
                             for b, label in zip(found.get("bboxes", []), found.get("labels", []))]
    return {"regions": regions, "width": int(w), "height": int(h)}


class TextRegion(TypedDict):
    text: str
    quad: list[float]


class ReadText(TypedDict):
    text: str
    regions: list[TextRegion]


@task("florence.ocr", category="see", capabilities=["vision", "ocr"], gpu="T4", timeout=300)
def florence_ocr(image_path: str, model_id: str = "microsoft/Florence-2-base") -> ReadText:
    """Reads the text in an image with Florence-2, with each line's quadrilateral (8 numbers, pixels)."""
    parsed, _ = florence("florence.ocr", image_path, "<OCR_WITH_REGION>", model_id)
    found = parsed if isinstance(parsed, dict) else {}
    regions: list[TextRegion] = [{"text": str(t).replace("</s>", "").strip(), "quad": [float(v) for v in q]}
                                 for q, t in zip(found.get("quad_boxes", []), found.get("labels", []))]
    return {"text": "\n".join(r["text"] for r in regions if r["text"]), "regions": regions}


class Face(TypedDict):
    box: Box


class Faces(TypedDict):
    faces: list[Face]
    count: int
    width: int
    height: int


class FrameFaces(FrameInfo, Faces):
    pass


class SceneFaces(TypedDict):
    frames: list[FrameFaces]


@task("faces.detect", category="see", capabilities=["vision"], gpu="T4", timeout=300, pipe=IMAGE_PIPE)
def faces_detect(image_path: str | None = None, scenes: list[SceneRef] | None = None, min_size: int = 30,
                 scale_factor: float = 1.1, min_neighbors: int = 5) -> Faces | SceneFaces:
    """Detects frontal faces in an image, or in every scene's keyframe, with OpenCV's bundled Haar cascade.

    Runs on CPU (no download); the seed lists it for a T4, where its GPU models would run."""
    cv2 = cv2_module("faces.detect")
    if scale_factor <= 1.0:
        raise TaskError("`scale_factor` must be above 1.0")
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def one(image: str) -> Faces:
        img = cv2.imread(str(resolve(image, "image_path")))
        if img is None:
            raise TaskError(f"`image_path` {image}: not an image OpenCV can read")
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                         minSize=(min_size, min_size))
        faces: list[Face] = [{"box": {"x": float(x), "y": float(y), "width": float(w), "height": float(h)}}
                             for (x, y, w, h) in found]
        return {"faces": faces, "count": len(faces), "width": int(img.shape[1]), "height": int(img.shape[0])}

    return per_image("faces.detect", image_path, scenes, one)
