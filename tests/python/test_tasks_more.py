"""The rest of the CPU-runnable tasks on real inputs: faces on a real photo
(scikit-image's astronaut), motion and tracking on an ffmpeg test video, the
vector store on disk, subtitles, loudness, thumbnails, PDF text, HTTP."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest

from shared.tasks import TaskError, media
from shared.tasks.find.vectors import vector_query, vector_upsert
from shared.tasks.get.http import http_request
from shared.tasks.hear.levels import audio_levels
from shared.tasks.see.vision import faces_detect
from shared.tasks.transform.more import audio_normalize, pdf_text, subtitles_write, video_thumbnail
from shared.tasks.watch.tracking import link, motion_detect, tracking_faces

from .test_tasks_media import tone


def astronaut(dest):
    spec = importlib.util.find_spec("skimage")
    src = os.path.join(spec.submodule_search_locations[0], "data", "astronaut.png")
    shutil.copy(src, dest)


def test_faces_on_a_real_photo(work):
    astronaut(work / "astronaut.png")
    out = faces_detect("astronaut.png")
    assert out["count"] == 1 and (out["width"], out["height"]) == (512, 512)
    box = out["faces"][0]["box"]
    # Eileen Collins' face is in the upper middle of the picture.
    assert 150 < box["x"] < 250 and 50 < box["y"] < 150, box
    (work / "blank.png").write_bytes(b"not an image")
    with pytest.raises(TaskError, match="not an image OpenCV can read"):
        faces_detect("blank.png")


def test_motion_and_face_tracks_on_video(work):
    media.run(["-f", "lavfi", "-i", "testsrc=duration=3:size=160x120:rate=10", "-c:v", "mpeg4", str(work / "moving.mp4")], "video")
    media.run(["-f", "lavfi", "-i", "color=c=gray:duration=3:size=160x120:rate=10", "-c:v", "mpeg4", str(work / "still.mp4")], "video")
    moving = motion_detect("moving.mp4", fps=5)
    assert moving["frames"] == 15 and moving["segments"], moving
    still = motion_detect("still.mp4", fps=5)
    assert still["segments"] == []
    faces = tracking_faces("moving.mp4", fps=5)
    assert faces == {"tracks": [], "frames": 15}


def test_a_face_moving_through_a_video_is_one_track(work):
    # Two seconds panning slowly across the astronaut photo (a wider pan
    # meets a false positive of the Haar cascade on her suit): her face
    # drifts left and up, seen in (almost) every sampled frame.
    astronaut(work / "astronaut.png")
    pan = "crop=400:400:'t*20':'t*10'"
    media.run(["-loop", "1", "-i", str(work / "astronaut.png"), "-t", "2", "-r", "10", "-vf", pan,
               "-c:v", "mpeg4", "-q:v", "2", str(work / "face.mp4")], "video")
    out = tracking_faces("face.mp4", fps=5)
    assert out["frames"] == 10
    assert len(out["tracks"]) == 1, out["tracks"]
    track = out["tracks"][0]
    assert track["start"] == 0.0 and len(track["sightings"]) >= 8, track
    first, last = track["sightings"][0]["box"], track["sightings"][-1]["box"]
    # The crop window moves right and down, so the face moves left and up.
    assert last["x"] < first["x"] - 20 and last["y"] < first["y"] - 10, (first, last)
    assert 150 < first["x"] < 250 and 50 < first["y"] < 150, first


def test_tracks_link_overlapping_boxes():
    b = lambda x: {"x": float(x), "y": 0.0, "width": 10.0, "height": 10.0}  # noqa: E731
    frames = [(0.0, [b(0), b(100)]), (0.2, [b(2), b(101)]), (0.4, [b(4)]), (2.0, [b(5)])]
    tracks = link(frames, max_gap=1.0)
    assert [(t["id"], t["start"], t["end"], len(t["sightings"])) for t in tracks] == [
        (0, 0.0, 0.4, 3), (1, 0.0, 0.2, 2), (2, 2.0, 2.0, 1)]


def test_vector_store_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("DWA_VECTOR_DIR", str(tmp_path / "vec"))
    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(50, 16)).astype(float)
    items = [{"id": f"doc{i}", "vector": v.tolist(), "metadata": {"n": i}} for i, v in enumerate(vecs)]
    assert vector_upsert("docs", items[:30])["total"] == 30
    assert vector_upsert("docs", items[25:])["total"] == 50  # 5 replaced, 20 added
    hits = vector_query("docs", vecs[42].tolist(), top_k=3)["matches"]
    assert hits[0]["id"] == "doc42" and hits[0]["metadata"] == {"n": 42}
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # Replacing an id moves it.
    vector_upsert("docs", [{"id": "doc42", "vector": (-vecs[42]).tolist(), "metadata": {"n": -1}}])
    assert vector_query("docs", vecs[42].tolist(), top_k=1)["matches"][0]["id"] != "doc42"
    with pytest.raises(TaskError, match="holds 16-dimensional vectors, not 3"):
        vector_upsert("docs", [{"id": "x", "vector": [1, 2, 3]}])
    with pytest.raises(TaskError, match="no collection 'nope'"):
        vector_query("nope", [1.0] * 16)
    with pytest.raises(TaskError, match="`collection` must be"):
        vector_query("../etc", [1.0])
    assert not list((tmp_path / "vec" / "docs").glob("*.tmp"))


def test_subtitles(work):
    segs = [{"start": 0.0, "end": 1.5, "text": " Hello "}, {"start": 3661.25, "end": 3662.0, "text": "later"}]
    out = subtitles_write(segs)
    assert out == {"path": "subtitles.srt", "cues": 2}
    assert (work / "subtitles.srt").read_text() == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello\n\n2\n01:01:01,250 --> 01:01:02,000\nlater\n")
    subtitles_write(segs, format="vtt", name="captions")
    assert (work / "captions.vtt").read_text().startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello\n")
    with pytest.raises(TaskError, match=r"`segments\[0\]` ends before it starts"):
        subtitles_write([{"start": 2, "end": 1, "text": "x"}])


def test_loudness_normalize_and_levels(work):
    tone(work / "quiet.wav", seconds=3)
    before = audio_levels("quiet.wav")["peakDb"]
    out = audio_normalize("quiet.wav", target_lufs=-14)
    after = audio_levels(out["path"])["segments"][1]["db"]
    assert before == pytest.approx(-8.0, abs=0.2)  # a 0.4 amplitude sine
    assert after > -16, after  # louder to reach -14 LUFS
    with pytest.raises(TaskError, match="target_lufs"):
        audio_normalize("quiet.wav", target_lufs=0)


def test_thumbnail(work):
    media.run(["-f", "lavfi", "-i", "testsrc=duration=3:size=320x240:rate=10", "-c:v", "mpeg4", str(work / "v.mp4")], "video")
    out = video_thumbnail("v.mp4", width=160)
    assert out["path"] == "v.thumb.jpg" and out["time"] == pytest.approx(1.0, abs=0.01)
    assert (work / "v.thumb.jpg").read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(TaskError, match="outside the video"):
        video_thumbnail("v.mp4", time=10)


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, cross-reference offsets computed."""
    stream = f"BT /F1 24 Tf 72 700 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_pdf_text(work):
    (work / "doc.pdf").write_bytes(minimal_pdf("Hello from dwa"))
    assert pdf_text("doc.pdf") == {"text": "Hello from dwa", "pages": 1}
    (work / "bad.pdf").write_bytes(b"%PDF-1.4 broken")
    with pytest.raises(TaskError, match="not a readable PDF"):
        pdf_text("bad.pdf")


def test_http_request(site):
    root, base = site
    (root / "data.json").write_text(json.dumps({"a": 1}))
    out = http_request(f"{base}/data.json")
    assert out["status"] == 200 and out["json"] == {"a": 1} and out["text"] is None
    out = http_request(f"{base}/missing", fail_on_status=False)
    assert out["status"] == 404 and out["text"]
    with pytest.raises(TaskError, match="answered 404"):
        http_request(f"{base}/missing")


def cuts_video(path):
    """Three shots of different colours, 1.5 s each: two cuts."""
    parts = []
    for i, colour in enumerate(["red", "green", "blue"]):
        p = path.parent / f"shot{i}.mp4"
        media.run(["-f", "lavfi", "-i", f"color=c={colour}:duration=1.5:size=160x120:rate=25", "-c:v", "mpeg4", str(p)], "shot")
        parts.append(p)
    listing = path.parent / "shots.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in parts))
    media.run(["-f", "concat", "-safe", "0", "-i", str(listing), "-c:v", "mpeg4", str(path)], "concat shots")


def test_scenes_detect_finds_the_cuts(work):
    from shared.tasks.watch.scenes import scenes_detect

    cuts_video(work / "cuts.mp4")
    out = scenes_detect("cuts.mp4")
    assert out["count"] == 3, out
    starts = [s["start"] for s in out["scenes"]]
    assert starts[0] == 0.0 and starts[1] == pytest.approx(1.5, abs=0.1) and starts[2] == pytest.approx(3.0, abs=0.1)
    for s in out["scenes"]:
        assert (work / s["keyframe"]).read_bytes()[:2] == b"\xff\xd8"
