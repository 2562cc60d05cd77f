"""Thin entry points, one per job: ``python -m jobs.<name>`` or ``reliable-ad <name>``.

Each module defines ``main(cfg) -> int`` over one typed config and a ``SPEC`` (:class:`jobs.common.JobSpec`)
that says which flags it takes; :mod:`jobs.cli` maps subcommands 1:1 onto these modules.
"""
