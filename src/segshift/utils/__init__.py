"""Small shared utilities: atomic writes (:mod:`~segshift.utils.atomic`), reading JSON files
(:mod:`~segshift.utils.jsonfile`), what machine this is
(:mod:`~segshift.utils.machine`), how networks run (:mod:`~segshift.utils.execution`).
"""
