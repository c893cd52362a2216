"""Live drift monitoring: the bins of a bundle's ``stats.json`` baseline, counted for live rows.

``counting`` keeps a loaded model's counts (``Monitor``); ``report`` is the
``edgebundle.drift/2`` report they are written as; ``statistics`` reads them (population
stability index, a chi-square test, a verdict per histogram); ``saved`` keeps a server's last
report in the store for ``bundle-runtime status``.
"""
