"""Vision models that need a GPU and weights from a model hub (SAM 2, OpenCLIP,
SigLIP, Depth Anything). Their weights cannot be fetched here: the code is
real and the tests cover the checks before the model call."""

from __future__ import annotations

from functools import lru_cache

from typing_extensions import TypedDict

from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError, require


class Mask(TypedDict):
    path: str
    score: float
    area: int


class Masks(TypedDict):
    masks: list[Mask]


@lru_cache(maxsize=1)
def _sam(model_id: str):
    predictor = require("sam2.segment", "sam2", "sam2.sam2_image_predictor")
    return predictor.SAM2ImagePredictor.from_pretrained(model_id)


@task("sam2.segment", category="see", capabilities=["vision"], gpu="A10G", timeout=600)
def sam2_segment(image_path: str, points: list[list[float]], labels: list[int] | None = None,
                 model_id: str = "facebook/sam2-hiera-small") -> Masks:
    """Segments the object(s) at the given points with SAM 2; writes each mask as a PNG."""
    if not points or any(len(p) != 2 for p in points):
        raise TaskError("`points` must be a non-empty list of [x, y] pairs")
    if labels is not None and len(labels) != len(points):
        raise TaskError("`labels` must be as many as `points` (1 = foreground, 0 = background)")
    path = resolve(image_path, "image_path")
    import numpy as np
    from PIL import Image

    image = np.array(Image.open(path).convert("RGB"))
    predictor = _sam(model_id)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(point_coords=np.array(points), point_labels=np.array(labels or [1] * len(points)))
    out: list[Mask] = []
    for i, (m, s) in enumerate(zip(masks, scores)):
        dest = output(f"{path.stem}.mask{i}.png")
        Image.fromarray((m > 0).astype("uint8") * 255).save(dest)
        out.append({"path": relative(dest), "score": float(s), "area": int((m > 0).sum())})
    return {"masks": out}


class ImageEmbedding(TypedDict):
    model: str
    vector: list[float]


@lru_cache(maxsize=1)
def _clip(model: str, pretrained: str):
    open_clip = require("clip.embed", "open_clip_torch", "open_clip")
    torch = require("clip.embed", "torch", "torch")
    m, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return m.to(device).eval(), preprocess, open_clip.get_tokenizer(model), device


@task("clip.embed", category="see", capabilities=["vision", "embeddings"], gpu="T4", timeout=300)
def clip_embed(image_path: str | None = None, text: str | None = None, model: str = "ViT-B-32",
               pretrained: str = "laion2b_s34b_b79k") -> ImageEmbedding:
    """Embeds an image or a text into OpenCLIP's shared space (unit vector), for image search."""
    if (image_path is None) == (text is None):
        raise TaskError("give `image_path` or `text`, one of them")
    path = resolve(image_path, "image_path") if image_path else None
    import torch
    from PIL import Image

    m, preprocess, tokenizer, device = _clip(model, pretrained)
    with torch.no_grad():
        if path is not None:
            v = m.encode_image(preprocess(Image.open(path).convert("RGB")).unsqueeze(0).to(device))
        else:
            v = m.encode_text(tokenizer([text]).to(device))
        v = v / v.norm(dim=-1, keepdim=True)
    return {"model": f"{model}/{pretrained}", "vector": v[0].cpu().tolist()}


class Label(TypedDict):
    label: str
    score: float


class Labels(TypedDict):
    labels: list[Label]


@lru_cache(maxsize=1)
def _siglip(model_id: str):
    transformers = require("siglip.classify", "transformers", "transformers")
    return transformers.pipeline("zero-shot-image-classification", model=model_id)


@task("siglip.classify", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def siglip_classify(image_path: str, labels: list[str], model_id: str = "google/siglip-base-patch16-224") -> Labels:
    """Scores an image against free-text labels (zero-shot) with SigLIP."""
    if len(labels) < 2:
        raise TaskError("`labels` must offer at least two labels")
    path = resolve(image_path, "image_path")
    from PIL import Image

    result = _siglip(model_id)(Image.open(path).convert("RGB"), candidate_labels=labels)
    return {"labels": [{"label": r["label"], "score": float(r["score"])} for r in result]}


class Depth(TypedDict):
    path: str
    min: float
    max: float


@task("depth.estimate", category="see", capabilities=["vision"], gpu="T4", timeout=300)
def depth_estimate(image_path: str, model_id: str = "depth-anything/Depth-Anything-V2-Small-hf") -> Depth:
    """Estimates relative depth with Depth Anything; writes the depth map as a 16-bit PNG."""
    path = resolve(image_path, "image_path")
    pipeline = require("depth.estimate", "transformers", "transformers").pipeline
    import numpy as np
    from PIL import Image

    pred = pipeline("depth-estimation", model=model_id)(Image.open(path).convert("RGB"))
    depth = np.asarray(pred["predicted_depth"], dtype=np.float32).squeeze()
    lo, hi = float(depth.min()), float(depth.max())
    scaled = ((depth - lo) / ((hi - lo) or 1.0) * 65535).astype("uint16")
    dest = output(f"{path.stem}.depth.png")
    Image.fromarray(scaled).save(dest)
    return {"path": relative(dest), "min": lo, "max": hi}
