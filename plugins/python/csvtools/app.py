"""`csvtools`: transform tasks written in Python (componentize-py).

- `csv.parse`: CSV (`text`, or `path`, a file of the task's working folder)
  into a list of row objects keyed by the header (or lists when
  `header` is false).
- `csv.format`: a list of row objects into CSV text; with `output`, also
  written to that file of the working folder.

The working folder is the current directory (`.`); nothing else of the file
system is visible to the plugin.
"""

import csv
import io
import json
import os

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import logging
from wit_world.imports.types import PluginError


def fail(message: str) -> Err:
    return Err(PluginError(message=message, retryable=False))


def workdir_path(field: str, p) -> str:
    if not isinstance(p, str) or not p:
        raise fail(f"`{field}` must be a non-empty string")
    if p.startswith("/") or p.startswith("\\"):
        raise fail(f"`{field}` {p!r} is an absolute path; files are named relative to the task's working folder")
    if ".." in p.replace("\\", "/").split("/"):
        raise fail(f"`{field}` {p!r} leaves the task's working folder; `..` is not allowed")
    return p


def parse(inp: dict):
    text, path = inp.get("text"), inp.get("path")
    if (text is None) == (path is None):
        raise fail("give `text` or `path` (a file of the working folder), one of them")
    if path is not None:
        p = workdir_path("path", path)
        try:
            with open(p, newline="", encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise fail(f"`path` {p}: no such file in the task's working folder")
        except (OSError, UnicodeDecodeError) as e:
            raise fail(f"`path` {p}: cannot read it: {e}")
    if not isinstance(text, str):
        raise fail("`text` must be a string")
    delimiter = inp.get("delimiter", ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise fail("`delimiter` must be one character")
    header = inp.get("header", True)
    if not isinstance(header, bool):
        raise fail("`header` must be a boolean")
    try:
        if header:
            rows = list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
        else:
            rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as e:
        raise fail(f"not valid CSV: {e}")
    return {"rows": rows, "count": len(rows)}


def format_rows(inp: dict):
    rows = inp.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise fail("`rows` must be a list of objects")
    columns = inp.get("columns")
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    elif not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise fail("`columns` must be a list of strings")
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()})
    text = out.getvalue()
    result = {"text": text, "count": len(rows), "columns": columns}
    if inp.get("output") is not None:
        p = workdir_path("output", inp["output"])
        tmp = p + ".dwa-partial"
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            os.replace(tmp, p)
        except OSError as e:
            raise fail(f"`output` {p}: cannot write it: {e}")
        result["path"] = p
    return result


TASKS = {"csv.parse": parse, "csv.format": format_rows}


class Transform(exports.Transform):
    def run(self, task: str, input: str) -> str:
        handler = TASKS.get(task)
        if handler is None:
            raise fail(f"csvtools runs {', '.join(TASKS)}, not {task}")
        try:
            inp = json.loads(input)
        except ValueError as e:
            raise fail(f"input is not JSON: {e}")
        if not isinstance(inp, dict):
            raise fail("input must be a JSON object")
        result = handler(inp)
        logging.log(logging.Level.DEBUG, f"{task}: {result.get('count')} rows")
        return json.dumps(result)
