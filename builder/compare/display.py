"""How the comparison writes numbers, in its verdict sentence and its table alike."""

from __future__ import annotations


def metric_text(value: float) -> str:
    return format(value, metric_spec(value))


def metric_spec(value: float) -> str:
    # four decimals keep AUC, log-loss and accuracy aligned; far from 1, significant digits
    return ".4f" if value == 0 or 1e-3 <= abs(value) < 1e6 else ".4g"


def signed(value: float, spec: str = ".3g") -> str:
    text = format(value, "+" + spec)
    # a typographic minus reads as a sign and is as wide as the plus
    return "−" + text[1:] if text.startswith("-") else text


def share(value: float) -> str:
    text = f"{value:.1%}"
    # 99.96% must not print as the 100.0% that means "every row"
    return ">99.9%" if value < 1 and text == "100.0%" else text
