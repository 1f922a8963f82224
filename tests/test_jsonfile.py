"""read_json: every user JSON file is read here, and every way it can be bad is one line."""
from __future__ import annotations

import pytest

from refinemask.errors import RefineMaskError
from refinemask.jsonfile import read_json


def _one_line_error(path, what="boxes file") -> str:
    with pytest.raises(RefineMaskError) as info:
        read_json(path, what)
    message = str(info.value)
    assert "\n" not in message and what in message and str(path) in message
    return message


def test_reads_any_json_value(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"id": 1, "name": "caf\u00e9"}]', encoding="utf-8")
    assert read_json(path, "boxes file") == [{"id": 1, "name": "caf\u00e9"}]


def test_a_missing_file_is_named_with_its_role(tmp_path):
    assert _one_line_error(tmp_path / "none.json") == f"boxes file not found: {tmp_path / 'none.json'}"


def test_a_directory_is_not_a_file(tmp_path):
    assert "is not a file" in _one_line_error(tmp_path)


def test_invalid_json_gives_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"images": [\n  {"id": 1,}\n]}')
    assert "is not valid JSON (line 2, column" in _one_line_error(path, "annotation file")


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    assert "not UTF-8" in _one_line_error(path)
