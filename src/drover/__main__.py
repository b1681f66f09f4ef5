"""`python -m drover` (used by `accelerate launch -m drover ...`)."""

from drover.cli import main

raise SystemExit(main())
