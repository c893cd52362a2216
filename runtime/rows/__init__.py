"""Input rows in, output records out: the scoring contract (the README's "Scoring rows").

``parsed`` is what a row becomes (float32 values, or the error that stands in for it);
``json_rows`` and ``csv_rows`` read JSON values and CSV cells into those, one bad row costing
one error record while the stream goes on; ``answers`` scores parsed rows and renders their
records as JSON lines or CSV.
"""
