"""read_json: the document, or one InputFileError naming the file and the problem."""

from __future__ import annotations

import pytest

from segshift.errors import InputFileError
from segshift.utils.jsonfile import read_json


def test_reads_the_document(tmp_path):
    (tmp_path / "a.json").write_text('{"x": [1, 2]}', encoding="utf-8")
    assert read_json(tmp_path / "a.json", "missing") == {"x": [1, 2]}


@pytest.mark.parametrize(
    ("content", "invalid", "message"),
    [
        (None, "is not valid JSON", "a.json: missing: not a checkpoint folder"),
        (b"{not json", "is not valid JSON", "a.json: is not valid JSON (Expecting property name"),
        (b"\xff\xfe{}", "is corrupt", "a.json: is corrupt ('utf-8' codec can't decode"),
    ],
)
def test_missing_or_undecodable_is_one_error_naming_the_file(tmp_path, content, invalid, message):
    path = tmp_path / "a.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFileError) as err:
        read_json(path, "missing: not a checkpoint folder", invalid=invalid)
    assert err.value.path == path and message in str(err.value)


def test_other_os_errors_propagate(tmp_path):
    (tmp_path / "a.json").mkdir()
    with pytest.raises(IsADirectoryError):
        read_json(tmp_path / "a.json", "missing")
