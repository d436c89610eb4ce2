"""Run the command line: ``python -m engine run manifest.yaml``."""

from engine.cli import main

raise SystemExit(main())
