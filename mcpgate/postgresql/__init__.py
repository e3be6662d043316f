"""Django's PostgreSQL backend with a connection pool that checks a connection only after it was idle."""
