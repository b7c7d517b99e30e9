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
