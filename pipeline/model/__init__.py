"""The contract with the outside: events, wire rows, topic names, window and alert records."""
