"""The jobs above the strategies: a job's configuration (:mod:`.config`), its context (data,
splits, backbone, :mod:`.context`), checks made before it starts (:mod:`.preflight`), one fit
logged as an MLflow run (:mod:`.fit`, :mod:`.reporting`), ``train``, ``pretrain`` and ``tune``
(an Optuna study tracked in MLflow: :mod:`.study`, its identity :mod:`.study_setup` and storage
:mod:`.study_storage`)."""

from scadapt.infra.lazy import lazy_attributes

_WHERE = {"TuneJob": "scadapt.jobs.config", "TuneResult": "scadapt.jobs.study", "tune": "scadapt.jobs.study"}
__getattr__, __dir__ = lazy_attributes(__name__, _WHERE)
__all__ = list(_WHERE)
