"""Layer 0: what every other layer shares and that depends on no other layer: errors, the params
schema, file I/O, model kinds, fixed Inductor settings and the one place noise is silenced."""
