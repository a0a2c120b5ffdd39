"""Parts of the report (:mod:`pipelines.report`): numbers with their intervals and the paired
sentences (:mod:`.intervals`), the deploy section (:mod:`.deploy`), the search section (:mod:`.search`)."""
