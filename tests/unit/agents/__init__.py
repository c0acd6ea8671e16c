"""Unit tests of agents: the faust internals the shell relies on, delivery failures."""
