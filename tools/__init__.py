"""Build tooling for contributors (the generator of the course's code); notebooks never import it."""
