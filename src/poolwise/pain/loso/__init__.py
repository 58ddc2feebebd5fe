"""Leave-one-subject-out evaluation: a run's configuration (:mod:`.config`), the protocols that
decide each fold's subjects and data (:mod:`.protocols`), one fold (:mod:`.folds`), the run over
all folds (:mod:`.run`), several models in one comparison (:mod:`.compare`), and the report
(:mod:`.records` reads the run folders back, :mod:`.summary` gives their numbers,
:mod:`.report` writes them, :mod:`.provenance` says where the runs ran)."""
