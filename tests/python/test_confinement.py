"""The Python backends under the host's rules: URL-taking tasks refuse
non-public targets (in their various spellings, by name, and on redirect)
unless DWA_HTTP_ALLOW lists them; file-taking tasks stay in the task's
working folder. Real local servers are the targets."""

from __future__ import annotations

import http.server
import ipaddress
import socketserver
import threading

import pytest

from shared.tasks import TaskError
from shared.tasks.context import output, resolve
from shared.tasks.get.download import download_file, rss_fetch, web_fetch, download_youtube
from shared.tasks.get.http import http_request
from shared.tasks.netguard import special

FETCHERS = [
    ("download.file", download_file),
    ("rss.fetch", rss_fetch),
    ("web.fetch", web_fetch),
    ("http.request", http_request),
    # Checked before yt-dlp is even imported (its own redirects are not).
    ("download.youtube", download_youtube),
]

# Loopback, private, link-local and metadata targets, spelled as attackers do.
TARGETS = [
    "http://127.0.0.1:{port}/x",
    "http://127.1:{port}/x",
    "http://2130706433:{port}/x",
    "http://0x7f000001:{port}/x",
    "http://localhost:{port}/x",
    "http://[::1]:{port}/x",
    "http://[::ffff:127.0.0.1]:{port}/x",
    "http://[64:ff9b::7f00:1]:{port}/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/x",
    "http://[fd00:ec2::254]/x",
]


@pytest.fixture
def listener():
    """A real local server that counts the requests that reach it."""
    hits = []

    class Count(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret")

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Count)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hits
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("name,fetch", FETCHERS)
def test_url_tasks_refuse_non_public_targets_in_every_spelling(name, fetch, work, listener, monkeypatch):
    monkeypatch.delenv("DWA_HTTP_ALLOW", raising=False)
    port, hits = listener
    for target in TARGETS:
        url = target.format(port=port)
        with pytest.raises(TaskError, match="DWA_HTTP_ALLOW") as e:
            fetch(url)
        assert not e.value.retryable, f"{name} {url}: a refusal is not retried"
    assert hits == [], f"{name} reached the server: {hits}"
    assert not [p for p in work.iterdir() if p.name != ".dwa-workdir"], "nothing written"


@pytest.fixture
def redirector(monkeypatch):
    """An allowed server (127.0.0.1) whose answer redirects elsewhere."""
    monkeypatch.setenv("DWA_HTTP_ALLOW", "127.0.0.1/32")

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/to/"))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Redirect)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# download.youtube is not here: yt-dlp follows its redirects itself
# (docs/backend-protocol.md says so).
@pytest.mark.parametrize("name,fetch", FETCHERS[:4])
def test_a_redirect_to_a_non_public_target_is_refused(name, fetch, work, redirector):
    for target in ["http://127.0.0.2:9/x", "http://169.254.169.254/latest/"]:
        with pytest.raises(TaskError, match="DWA_HTTP_ALLOW"):
            fetch(f"{redirector}/to/{target}")


def test_the_allow_list_opens_a_private_target(work, listener, monkeypatch):
    port, hits = listener
    monkeypatch.setenv("DWA_HTTP_ALLOW", "localhost, 10.0.0.0/8")
    assert http_request(f"http://localhost:{port}/ok")["status"] == 200
    monkeypatch.setenv("DWA_HTTP_ALLOW", "127.0.0.0/8")
    assert http_request(f"http://127.0.0.1:{port}/ok")["status"] == 200
    assert hits == ["/ok", "/ok"]


def test_address_kinds_match_the_hosts_rule():
    for ip, kind in [("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("169.254.169.254", "cloud metadata"),
                     ("100.64.0.1", "shared (CGNAT)"), ("198.18.0.1", "private"), ("::1", "loopback"),
                     ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"), ("::127.0.0.1", "loopback"),
                     ("2001:0:4136:e378::1", "a Teredo tunnel"), ("fe80::1", "link-local")]:
        assert special(ipaddress.ip_address(ip)) == kind, ip
    assert special(ipaddress.ip_address("93.184.216.34")) is None
    assert special(ipaddress.ip_address("64:ff9b::5db8:d822")) is None


def test_files_are_names_inside_the_working_folder(work, tmp_path):
    (work / "in.txt").write_text("mine")
    assert resolve("in.txt").read_text() == "mine"
    (tmp_path / "outside.txt").write_text("not yours")
    (work / "link.txt").symlink_to(tmp_path / "outside.txt")
    (work / "sub").mkdir()
    for bad in ["/etc/passwd", "../outside.txt", "sub/../../outside.txt", "link.txt", str(tmp_path / "outside.txt")]:
        with pytest.raises(TaskError, match="working folder"):
            resolve(bad)
    for bad in ["/tmp/x.wav", "../x.wav", "link.txt"]:
        with pytest.raises(TaskError, match="working folder"):
            output(bad)
    assert output("sub/out.wav").parent == work / "sub"
