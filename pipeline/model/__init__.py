"""The contract with the outside: topic names (the record formats are to follow)."""
