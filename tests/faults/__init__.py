"""Fault tests: a database outage and a killed worker under load, against real gunicorn and PostgreSQL."""
