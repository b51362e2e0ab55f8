"""Commands of the `terramask` command line that live in their own modules."""
