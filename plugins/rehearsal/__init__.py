"""Staging rehearsal: the plan's runbook as Airflow TaskGroups, plus the plain functions doing the work.

Airflow puts `plugins/` on sys.path, so DAG files import this package as `rehearsal`.
"""
