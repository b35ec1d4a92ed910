"""Small shared utilities: atomic writes (:mod:`~segshift.utils.atomic`), what machine this is (:mod:`~segshift.utils.machine`)."""
