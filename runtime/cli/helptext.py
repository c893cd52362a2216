"""The help convention both command lines share: after a command's description and options,
an ``Examples:`` section (commands that run as written) and an ``Exit codes:`` section (the
codes that command can end with, from its tool's one table).

``epilog`` returns the text for argparse (with ``RawDescriptionHelpFormatter``) or click (pass
``keep="\\b"``: click re-wraps a paragraph unless its first line is that marker).
"""

from __future__ import annotations

from collections.abc import Sequence


def epilog(examples: Sequence[str], codes: Sequence[tuple[int, str]], keep: str = "") -> str:
    """``Examples:`` then ``Exit codes:``, each line indented by two spaces."""
    marker = f"{keep}\n" if keep else ""
    width = max(len(str(code)) for code, _ in codes)
    blocks = [
        "Examples:\n" + "\n".join(f"  {example}" for example in examples),
        "Exit codes:\n" + "\n".join(f"  {code:<{width}}  {meaning}" for code, meaning in codes),
    ]
    return "\n\n".join(marker + block for block in blocks)
