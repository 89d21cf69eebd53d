"""The web console: server-rendered pages for commissioners and providers over the same API."""
