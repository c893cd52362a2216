"""``python -m edgebundle.runtime``: the same command as ``bundle-runtime``."""

from edgebundle.runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
