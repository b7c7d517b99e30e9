"""Vision models that need a GPU and weights from a model hub (SAM 2 on images
and videos, OpenCLIP, SigLIP embeddings and labels, Depth Anything). Their weights cannot be fetched here: the code is
real and the tests cover the checks before the model call."""

from __future__ import annotations

from functools import lru_cache

from typing_extensions import TypedDict

from ..context import output, relative, resolve
from ..decorator import task
from ..errors import TaskError, require
from .keyframes import IMAGE_PIPE, SceneRef, per_image


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


class Embedding(TypedDict):
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
               pretrained: str = "laion2b_s34b_b79k") -> Embedding:
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


@lru_cache(maxsize=1)
def siglip_model(model_id: str):
    """SigLIP's model and processor, loaded once (on the GPU when there is one)."""
    torch = require("siglip.embed", "torch", "torch")
    transformers = require("siglip.embed", "transformers", "transformers")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = transformers.AutoModel.from_pretrained(model_id).to(device).eval()
    return model, transformers.AutoProcessor.from_pretrained(model_id), device


def siglip_vectors(images: list[str] | None, texts: list[str] | None, model_id: str) -> list[list[float]]:
    """Unit vectors of images (working-folder files) or texts in SigLIP's shared space."""
    import torch
    from PIL import Image

    model, processor, device = siglip_model(model_id)
    with torch.no_grad():
        if images is not None:
            pixels = [Image.open(resolve(p, "image_path")).convert("RGB") for p in images]
            v = model.get_image_features(**processor(images=pixels, return_tensors="pt").to(device))
        else:
            v = model.get_text_features(**processor(text=texts, padding="max_length", return_tensors="pt").to(device))
        v = v / v.norm(dim=-1, keepdim=True)
    return v.cpu().tolist()


class FrameEmbedding(TypedDict):
    index: int
    start: float | None
    end: float | None
    keyframe: str
    model: str
    vector: list[float]


class SceneEmbeddings(TypedDict):
    frames: list[FrameEmbedding]


@task("siglip.embed", category="see", capabilities=["vision", "embeddings"], gpu="T4", timeout=300, pipe=IMAGE_PIPE)
def siglip_embed(image_path: str | None = None, scenes: list[SceneRef] | None = None,
                 model_id: str = "google/siglip-base-patch16-224") -> Embedding | SceneEmbeddings:
    """Image embeddings with SigLIP (unit vectors), of one image or of every scene's keyframe."""
    return per_image("siglip.embed", image_path, scenes,
                     lambda image: {"model": model_id, "vector": siglip_vectors([image], None, model_id)[0]})


class MaskTrack(TypedDict):
    object: int
    frames: list[dict]


class VideoMasks(TypedDict):
    objects: list[MaskTrack]
    frames: int


#: Frames a video may have for sam2.track (its state holds every frame).
MAX_TRACK_FRAMES = 3000


@task("sam2.track", category="see", capabilities=["vision", "video"], gpu="A10G", ram=8, timeout=3600,
      pipe={"path": "video_path"})
def sam2_track(video_path: str, points: list[list[float]], frame: int = 0, labels: list[int] | None = None,
               model_id: str = "facebook/sam2-hiera-small") -> VideoMasks:
    """Video segmentation with SAM 2: the objects clicked at `points` on `frame`, followed through the video
    (per frame: each object's box and mask area in pixels)."""
    if not points or any(len(p) != 2 for p in points):
        raise TaskError("`points` must be a non-empty list of [x, y] pairs (one object each)")
    if labels is not None and len(labels) != len(points):
        raise TaskError("`labels` must be as many as `points` (1 = foreground, 0 = background)")
    if frame < 0:
        raise TaskError("`frame` must be 0 or more")
    path = resolve(video_path, "video_path")
    from .. import media

    folder = output(f"{path.stem}.sam2-frames/00000.jpg").parent
    media.run(["-i", str(path), "-q:v", "2", "-start_number", "0", str(folder / "%05d.jpg")], "sam2.track frames")
    count = len(list(folder.glob("*.jpg")))
    if count > MAX_TRACK_FRAMES:
        raise TaskError(f"the video has {count} frames, over the limit of {MAX_TRACK_FRAMES}: cut it or lower its fps")
    if frame >= count:
        raise TaskError(f"`frame` {frame} is past the video's last frame ({count - 1})")
    import numpy as np

    build = require("sam2.track", "sam2", "sam2.build_sam")
    predictor = build.build_sam2_video_predictor_hf(model_id)
    state = predictor.init_state(video_path=str(folder))
    for obj, point in enumerate(points):
        label = (labels or [1] * len(points))[obj]
        predictor.add_new_points_or_box(state, frame_idx=frame, obj_id=obj,
                                        points=np.array([point], dtype=np.float32), labels=np.array([label]))
    tracks: dict[int, MaskTrack] = {obj: {"object": obj, "frames": []} for obj in range(len(points))}
    for idx, ids, logits in predictor.propagate_in_video(state):
        for obj, logit in zip(ids, logits):
            mask = (logit[0] > 0).cpu().numpy()
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = {"x": float(xs.min()), "y": float(ys.min()), "width": float(xs.max() - xs.min() + 1),
                   "height": float(ys.max() - ys.min() + 1)}
            tracks[int(obj)]["frames"].append({"frame": int(idx), "box": box, "area": int(mask.sum())})
    return {"objects": list(tracks.values()), "frames": count}


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
