"""Configuration: the settings model and its vocabulary, loading, checks, client security."""
