"""download.file, rss.fetch and web.fetch against a local HTTP server."""

from __future__ import annotations

import hashlib

import pytest

from shared.tasks import TaskError
from shared.tasks.get.download import download_file, rss_fetch, web_fetch

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>dwa news</title>
<item><title>First</title><link>http://x/1</link><pubDate>Mon, 02 Nov 2026 10:00:00 GMT</pubDate><description>one</description></item>
<item><title>Second</title><link>http://x/2</link><description>two</description></item>
</channel></rss>"""


def test_download_file_whole_and_named(work, site):
    root, base = site
    data = bytes(range(256)) * 4000
    (root / "blob.bin").write_bytes(data)
    out = download_file(f"{base}/blob.bin")
    assert out == {"path": "blob.bin", "bytes": len(data), "contentType": "application/octet-stream",
                   "sha256": hashlib.sha256(data).hexdigest()}
    assert (work / "blob.bin").read_bytes() == data
    out = download_file(f"{base}/blob.bin", filename="copy.bin")
    assert out["path"] == "copy.bin"
    assert not list(work.glob("*.partial"))


def test_download_file_errors(work, site):
    root, base = site
    (root / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(TaskError, match="larger than max_bytes"):
        download_file(f"{base}/big.bin", max_bytes=1000)
    # Only the folder's marker (shared.tasks.context.WORKDIR_MARKER) is there.
    assert [p.name for p in work.iterdir()] == [".dwa-workdir"], "nothing half-written"
    with pytest.raises(TaskError, match="answered 404") as e:
        download_file(f"{base}/missing")
    assert e.value.retryable is False
    with pytest.raises(TaskError, match="must be http or https"):
        download_file("file:///etc/passwd")
    with pytest.raises(TaskError, match="plain name inside the working folder"):
        download_file(f"{base}/big.bin", filename="../escape.bin")
    with pytest.raises(TaskError, match="failed") as e:
        download_file("http://127.0.0.1:9/nothing")
    assert e.value.retryable is True


def test_rss_fetch(work, site):
    root, base = site
    (root / "feed.xml").write_text(RSS)
    feed = rss_fetch(f"{base}/feed.xml", limit=1)
    assert feed["title"] == "dwa news"
    assert feed["items"] == [{"title": "First", "link": "http://x/1", "published": "Mon, 02 Nov 2026 10:00:00 GMT", "summary": "one"}]
    (root / "page.html").write_text("<html>not a feed")
    with pytest.raises(TaskError, match="is not an RSS or Atom feed"):
        rss_fetch(f"{base}/page.html")


def test_web_fetch_text(work, site):
    root, base = site
    (root / "p.html").write_text("<html><head><title>Hello</title><style>x{}</style></head>"
                                 "<body><h1>Big</h1><script>var a;</script><p>words here</p></body></html>")
    page = web_fetch(f"{base}/p.html")
    assert page["title"] == "Hello" and page["text"] == "Big\nwords here" and page["status"] == 200
