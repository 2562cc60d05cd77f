"""reliable-ad's catalog pipeline: catalog I/O, preparation, generation and inspection stages,
recurrent generation, writers and reports (library code; the command line lives in ``jobs/``).

Start at :func:`pipelines.runner.run_catalog`; :mod:`pipelines.config` holds the typed config.
"""

__version__ = "0.1.0"
