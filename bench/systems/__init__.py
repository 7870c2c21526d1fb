"""One module per system under test; each runs its figures in a process of its own."""
