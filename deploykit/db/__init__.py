"""Databases: db.create, migrations and their runs."""
