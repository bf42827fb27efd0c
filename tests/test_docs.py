"""The Python examples of docs/api.md run as they are, in order, in one namespace (as in a notebook)."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_api_examples_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks((DOCS / "api.md").read_text())
    assert len(blocks) >= 6
    namespace: dict = {}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"docs/api.md block {number}", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert "fc torch.Size([1, 512])" in printed and "CAS" in printed and "I-CAS" in printed
    figures = tmp_path / "figures"
    assert (figures / "cas-resnet18.png").is_file() and (figures / "cas-resnet18.json").is_file()
    assert (tmp_path / "runs" / "api-example" / "summary.json").is_file()


def test_the_docs_point_nowhere_outside_the_repository():
    root = DOCS.parent
    for page in [root / "README.md", *DOCS.rglob("*.md")]:
        text = page.read_text()
        assert "../shared" not in text and "shared project folder" not in text, page
