"""Alembic migrations shipped inside the package (a package so wheels carry every file)."""
