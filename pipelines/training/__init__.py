"""Training layer: the one training/evaluation loop (:mod:`.loop`) and the :class:`~.context.Context`
that binds params to data, device and models. Depends on data, models and core."""
