"""The compression chain as functions on models: what each DVC stage does, minus file I/O and
tracking, one module per stage (:mod:`.teacher`, :mod:`.distill`, :mod:`.prune`, :mod:`.quantize`).
A stage imports only its own module, so an edit re-runs only the stages it can affect; the search
runs the whole chain through :mod:`pipelines.workflow`. Nothing else lives here: this file runs in
every stage that imports one of them."""
