"""The training library below the strategies: the classifier loop through the backbone
(:mod:`.classifier`), its optimiser (:mod:`.optim`), the memory planner (:mod:`.memory`), the
frozen-layer cache (:mod:`.frozen_layers`) and the closed-form fits on expression (:mod:`.linear`).
It knows no strategy by name and logs nothing to MLflow; the strategies call it."""
