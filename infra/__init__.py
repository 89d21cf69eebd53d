"""Infrastructure: settings, database, migrations, Redis and the embedded servers."""
