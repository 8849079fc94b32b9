"""``python -m pimc_ray.cli``: the ``pimc`` command."""

from pimc_ray.cli import main

raise SystemExit(main())
