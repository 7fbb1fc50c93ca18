"""`python -m banditd` is the `banditd` command."""

from banditd.cli import main

raise SystemExit(main())
