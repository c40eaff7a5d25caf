"""analysis_server package."""
