"""``python -m evokernel.bench``."""

from . import main

raise SystemExit(main())
