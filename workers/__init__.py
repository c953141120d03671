"""dramatiq actors: thin, take ids, open a unit of work, call a service, commit."""
