"""Benchmarks of userstore against the raw drivers, SQLAlchemy Core/ORM and advanced-alchemy.

Run ``python -m benchmarks --help`` from the repository root; README.md beside
this file says what each workload and variant measures.
"""
