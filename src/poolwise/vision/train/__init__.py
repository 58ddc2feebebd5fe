"""Vision training runs: settings (:mod:`.spec`, :mod:`.recipe`, :mod:`.presets`,
:mod:`.checks`), what a run reads (:mod:`.inputs`), the engine every run type trains with
(:mod:`.engine`), classification runs (:mod:`.classification`) and their scores
(:mod:`.evaluate`, :mod:`.dependence`)."""
