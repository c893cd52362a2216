"""Live drift monitoring: the bins of a bundle's ``stats.json`` baseline, counted for live rows.

``counting`` keeps a loaded model's counts (``Monitor``); ``report`` is the
``edgebundle.drift/1`` report they are written as; ``statistics`` reads them (population
stability index, missing rates, a one-line verdict); ``saved`` keeps a server's last report in
the store for ``bundle-runtime status``.
"""
