"""just gen-types / just check-types."""

from __future__ import annotations

import json

from shared.tasks import gen


def test_generated_files_are_current():
    assert gen.main(["--check"]) == 0, "run `just gen-types` and commit the result"


def test_check_notices_a_stale_file(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "catalog.json"
    stale.write_text("{}")
    monkeypatch.setattr(gen, "CATALOG", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    monkeypatch.setattr(gen, "TYPES", tmp_path / "tasks.ts")
    assert gen.main(["--check"]) == 1
    assert "stale generated files: catalog.json, tasks.ts" in capsys.readouterr().err
    assert gen.main([]) == 0
    assert json.loads(stale.read_text())["tasks"]
    assert gen.main(["--check"]) == 0


def test_typescript_shapes():
    ts = gen.types_ts()
    assert '  | "download.file"' in ts
    assert '"download.file": {\n    "url": string;\n    "filename"?: string | null;' in ts
    assert '"openai.chat_stream": string;' in ts  # a streaming task's merged result
    assert "export const TASK_METADATA = {" in ts and "} as const;" in ts


def test_the_hosts_own_tasks_are_generated_too():
    names = {t["name"]: t for t in gen.entries()}
    # WebAssembly transforms (from the plugins' manifests) and builtins.
    assert names["image.resize"]["backend"] == "wasm" and names["chunk.text"]["inputSchema"]["type"] == "object"
    assert names["builtin.range"]["backend"] == "builtin"
    ts = gen.types_ts()
    assert '  | "chunk.text"' in ts and '  | "builtin.echo"' in ts
    assert '"builtin.range": {\n    "n": number;\n  };' in ts
    assert '"builtin.echo": unknown;' in ts
    # A deprecated alias is its task's type, marked.
    assert '  /** @deprecated use "openai.summarize" */\n  "llm.summarize": TaskPayloads["openai.summarize"];' in ts
