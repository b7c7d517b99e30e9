"""Fetching things from the web into the task's working folder."""

from __future__ import annotations

import hashlib
import os
import re

from typing_extensions import TypedDict
from urllib.parse import unquote, urlparse

from .. import netguard
from ..context import output, relative
from ..decorator import task
from ..errors import TaskError, require


class Downloaded(TypedDict):
    path: str
    bytes: int
    contentType: str
    sha256: str


_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def _filename(url: str, disposition: str | None) -> str:
    if disposition:
        m = re.search(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', disposition)
        if m:
            return _BAD.sub("_", unquote(m.group(1))).strip("._") or "download"
    name = os.path.basename(urlparse(url).path)
    return _BAD.sub("_", unquote(name)).strip("._") or "download"


@task("download.file", category="get", capabilities=["network"], timeout=900)
def download_file(url: str, filename: str | None = None, max_bytes: int = 2 * 1024**3) -> Downloaded:
    """Downloads a URL into the task's working folder (streamed; written whole or not at all)."""
    import httpx

    netguard.check_url(url)
    if filename is not None and (os.path.isabs(filename) or ".." in filename.split("/")):
        raise TaskError(f"`filename` {filename!r} must be a plain name inside the working folder")
    try:
        with netguard.client(follow_redirects=True, timeout=httpx.Timeout(30.0, read=120.0)) as c, \
                c.stream("GET", url) as r:
            if r.status_code >= 400:
                raise TaskError(f"GET {url} answered {r.status_code}", retryable=r.status_code >= 500 or r.status_code == 429)
            name = filename or _filename(str(r.url), r.headers.get("content-disposition"))
            dest = output(name)
            tmp = dest.with_name(dest.name + ".partial")
            digest = hashlib.sha256()
            size = 0
            with open(tmp, "wb") as f:
                for chunk in r.iter_bytes(1 << 16):
                    size += len(chunk)
                    if size > max_bytes:
                        f.close()
                        tmp.unlink(missing_ok=True)
                        raise TaskError(f"{url} is larger than max_bytes ({max_bytes})")
                    digest.update(chunk)
                    f.write(chunk)
            os.replace(tmp, dest)
            content_type = r.headers.get("content-type", "application/octet-stream").split(";")[0]
    except httpx.TransportError as e:
        raise TaskError(f"GET {url} failed: {e}", retryable=True) from None
    return {"path": relative(dest), "bytes": size, "contentType": content_type, "sha256": digest.hexdigest()}


class FeedItem(TypedDict):
    title: str
    link: str
    published: str | None
    summary: str


class Feed(TypedDict):
    title: str
    items: list[FeedItem]


@task("rss.fetch", category="get", capabilities=["network"], timeout=60)
def rss_fetch(url: str, limit: int = 20) -> Feed:
    """Reads an RSS or Atom feed: its title and its newest items."""
    import feedparser
    import httpx

    if limit < 1:
        raise TaskError("`limit` must be at least 1")
    netguard.check_url(url)
    try:
        with netguard.client(follow_redirects=True, timeout=30.0) as c:
            r = c.get(url)
    except httpx.TransportError as e:
        raise TaskError(f"GET {url} failed: {e}", retryable=True) from None
    if r.status_code >= 400:
        raise TaskError(f"GET {url} answered {r.status_code}", retryable=r.status_code >= 500)
    feed = feedparser.parse(r.content)
    if feed.bozo and not feed.entries:
        raise TaskError(f"{url} is not an RSS or Atom feed: {feed.bozo_exception}")
    items: list[FeedItem] = [
        {
            "title": e.get("title", ""),
            "link": e.get("link", ""),
            "published": e.get("published") or e.get("updated"),
            "summary": e.get("summary", ""),
        }
        for e in feed.entries[:limit]
    ]
    return {"title": feed.feed.get("title", ""), "items": items}


class Page(TypedDict):
    url: str
    status: int
    contentType: str
    title: str
    text: str


@task("web.fetch", category="get", capabilities=["network"], timeout=60)
def web_fetch(url: str, max_chars: int = 200_000) -> Page:
    """Fetches a web page and answers its title and readable text (scripts and styles dropped)."""
    from html.parser import HTMLParser

    import httpx

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.title = ""
            self._skip = 0
            self._in_title = False

        def handle_starttag(self, tag, attrs):
            if tag in ("script", "style", "noscript"):
                self._skip += 1
            self._in_title = tag == "title"

        def handle_endtag(self, tag):
            if tag in ("script", "style", "noscript") and self._skip:
                self._skip -= 1
            self._in_title = False

        def handle_data(self, data):
            if self._in_title:
                self.title += data
            elif not self._skip and data.strip():
                self.parts.append(data.strip())

    netguard.check_url(url)
    try:
        with netguard.client(follow_redirects=True, timeout=30.0) as c:
            r = c.get(url)
    except httpx.TransportError as e:
        raise TaskError(f"GET {url} failed: {e}", retryable=True) from None
    content_type = r.headers.get("content-type", "").split(";")[0]
    if r.status_code >= 400:
        raise TaskError(f"GET {url} answered {r.status_code}", retryable=r.status_code >= 500)
    if "html" in content_type:
        p = Text()
        p.feed(r.text)
        title, text = p.title.strip(), "\n".join(p.parts)
    else:
        title, text = "", r.text
    return {"url": str(r.url), "status": r.status_code, "contentType": content_type, "title": title, "text": text[:max_chars]}


class Video(TypedDict):
    path: str
    title: str
    duration: float | None


@task("download.youtube", category="get", capabilities=["network"], timeout=1800, aliases=["youtube.download"])
def download_youtube(url: str, audio_only: bool = False) -> Video:
    """Downloads a video (or only its audio) with yt-dlp into the working folder.

    Not run by the tests: it needs the video site, which cannot be reached here.
    The URL is held to the address rule (netguard) before yt-dlp sees it;
    the redirects yt-dlp follows itself are not re-checked.
    """
    netguard.check_url(url)
    yt_dlp = require("download.youtube", "yt-dlp", "yt_dlp")
    out = output("%(id)s.%(ext)s")
    opts = {"outtmpl": str(out), "quiet": True, "noprogress": True}
    if audio_only:
        opts["format"] = "bestaudio/best"
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(url, download=True)
            path = ydl.prepare_filename(info)
    except yt_dlp.utils.DownloadError as e:
        raise TaskError(f"{url}: {e}", retryable=True) from None
    from pathlib import Path

    return {"path": relative(Path(path)), "title": info.get("title", ""), "duration": info.get("duration")}
