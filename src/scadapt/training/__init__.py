"""The jobs above the strategies: a job's configuration (:mod:`.config`), its context (data,
splits, backbone, :mod:`.context`), checks made before it starts (:mod:`.preflight`), one fit
logged as an MLflow run (:mod:`.fit`, :mod:`.reporting`), ``train`` and ``pretrain``."""
