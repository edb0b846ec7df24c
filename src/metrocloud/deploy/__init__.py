"""Running metrocloud's infrastructure on one machine: a local PostgreSQL server."""

from metrocloud.deploy.postgres import LocalPostgres, PostgresError, find_postgres_bindir

__all__ = ["LocalPostgres", "PostgresError", "find_postgres_bindir"]
