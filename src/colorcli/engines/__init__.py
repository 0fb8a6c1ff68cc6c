"""Engines that run a planned batch somewhere other than this process (``--engine``).

The local engine is :func:`colorcli.batch.run_jobs`; each engine here runs the same
:func:`colorcli.batch.process_job` for every photo, so outputs and rules are the same.
"""
