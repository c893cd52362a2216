"""``python -m runtime``: the same command as ``bundle-runtime``."""

from runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
