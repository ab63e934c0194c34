"""The Alembic migrations, shipped in the package so `adaptinf migrate` runs from any directory
of any install (see service/cli/admin.py). `alembic.ini` at the repository root serves the
`alembic` command in a checkout (`alembic revision --autogenerate ...`)."""
