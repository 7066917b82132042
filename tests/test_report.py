"""ctseg_lib.report: the one HTML table of the book."""

import pytest

from ctseg_lib.errors import CTSegError
from ctseg_lib.report import format_cell, table_html
from ctseg_lib.tasks import TASKS, get_task


def test_format_cell_floats_nan_and_text():
    assert format_cell(0.12345) == "0.123"
    assert format_cell(0.12345, "{:.1f}") == "0.1"
    assert format_cell(float("nan")) == "NaN"
    assert format_cell(3) == "3" and format_cell(None) == "" and format_cell("a") == "a"


def test_table_html_columns_formats_and_escaping():
    rows = [{"name": "<b>", "dice": 0.5, "n": 2}, {"name": "x", "dice": 0.25}]
    t = table_html(rows, ["name", "dice", "n"], {"dice": "{:.2f}"})
    assert t.count("<tr>") == 3 and "<th>dice</th>" in t
    assert "&lt;b&gt;" in t and "<td>0.50</td>" in t and "<td>0.25</td>" in t
    assert "<td></td>" in t  # missing key -> empty cell
    assert table_html(rows).count("<th>") == 3  # columns default to the first row's keys


def test_task_registry_is_consistent():
    for name, task in TASKS.items():
        assert task.name == name and task.labels[0] == "background"
        assert task.msd_folder.startswith(f"Task{task.code:02d}_")
        assert task.num_classes == len(task.labels) and 0 not in task.foreground
        assert callable(task.phantom_function())
    with pytest.raises(CTSegError, match="unknown task"):
        get_task("brain")


def test_image_html_embeds_the_file(tmp_path):
    import base64

    from ctseg_lib.report import image_html

    gif = tmp_path / "a.gif"
    gif.write_bytes(b"GIF89a-not-really")
    h = image_html(gif, 'case "1" <b>').data
    assert h.startswith('<img src="data:image/gif;base64,') and base64.b64encode(b"GIF89a-not-really").decode() in h
    assert 'alt="case &quot;1&quot; &lt;b&gt;"' in h
    (tmp_path / "a.bmp").write_bytes(b"x")
    with pytest.raises(CTSegError, match="embeds"):
        image_html(tmp_path / "a.bmp", "x")
