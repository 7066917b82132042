import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from check_site import broken_links  # noqa: E402


def test_broken_internal_links_are_found(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "a.html").write_text(
        '<a href="b.html#x">ok</a> <a href="missing.html">bad</a> <img src="../img.png"> '
        '<a href="https://example.org/x">external</a> <a href="#top">anchor</a>')
    (tmp_path / "book" / "b.html").write_text("<p>b</p>")
    (tmp_path / "img.png").write_bytes(b"png")
    assert broken_links(tmp_path) == ["book/a.html: broken internal link missing.html"]
