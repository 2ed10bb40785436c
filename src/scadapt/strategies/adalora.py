"""``adalora``: AdaLoRA (Zhang et al. 2023, peft). LoRA in SVD form ``B diag(E) A`` whose rank
budget is reallocated while training: every ``delta_t`` steps the least important singular values
(by smoothed sensitivity ``|w * grad|``) are masked, shrinking the total rank from ``init_r`` to
``target_r`` per target on a cubic schedule, then held for the last ``tfinal`` fraction of steps.
``A`` and ``B`` are kept near-orthogonal by a term in the loss.

Both need the training loop: the budget step runs after every update and the orthogonality term
is added to every loss (:class:`~scadapt.fitting.classifier.TrainingHooks`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution
from peft import AdaLoraConfig as PeftAdaLoraConfig
from peft import inject_adapter_in_model
from peft.tuners.adalora.layer import RankAllocator
from torch import Tensor, nn

from scadapt.fitting.classifier import TrainingHooks
from scadapt.strategies.base import InjectedConfig, adapted_layers, register
from scadapt.strategies.families import AdaptedStrategy
from scadapt.strategies.hyperparameters import hyperparameter
from scadapt.strategies.lora import TARGETS, target_pattern

ADAPTER = "default"  # peft's adapter name


@dataclass
class AdaLoRAConfig(InjectedConfig):
    init_r: int = hyperparameter(12, "rank per target at the start", at_least=1)
    target_r: int = hyperparameter(8, "average rank per target at the end (at most init_r)", at_least=1,
                                   search=CategoricalDistribution([4, 8]))
    alpha: float = hyperparameter(16.0, "scale of the update (alpha / r)", above=0)
    lora_dropout: float = hyperparameter(0.0, "dropout on the input of each target", at_least=0, below=1)
    targets: str = hyperparameter("attention_ffn", "the modules adapted in each layer (as lora's)", choices=tuple(TARGETS))
    orth_reg_weight: float = hyperparameter(0.5, "weight of the orthogonality regulariser", at_least=0,
                                            search=FloatDistribution(0.05, 1.0, log=True))
    tinit: float = hyperparameter(0.1, "share of the steps before any rank is masked", at_least=0)
    tfinal: float = hyperparameter(0.2, "share of the steps at the end with the final ranks fixed", at_least=0)
    delta_t: int = hyperparameter(10, "steps between budget reallocations", at_least=1)

    def problems(self) -> list[str]:
        return [text for bad, text in ((self.target_r > self.init_r, f"target_r <= init_r is needed (got {self.target_r} > {self.init_r})"),
                                       (self.tinit + self.tfinal >= 1, "tinit + tfinal < 1 is needed")) if bad]


@register
class AdaLoRA(AdaptedStrategy):
    name = "adalora"
    config_class = AdaLoRAConfig
    description = "AdaLoRA: SVD-form LoRA with its rank budget reallocated while training (peft)"

    @classmethod
    def peft_config(cls, config: AdaLoRAConfig, total_steps: int, layers: range) -> PeftAdaLoraConfig:
        tinit = int(config.tinit * total_steps)
        tfinal = min(int(config.tfinal * total_steps), total_steps - tinit - 1)
        return PeftAdaLoraConfig(init_r=config.init_r, target_r=config.target_r, lora_alpha=config.alpha,
                                 lora_dropout=config.lora_dropout, target_modules=target_pattern(config.targets, layers),
                                 orth_reg_weight=config.orth_reg_weight, tinit=tinit, tfinal=max(0, tfinal),
                                 deltaT=config.delta_t, total_step=max(1, total_steps))

    @classmethod
    def adapt(cls, backbone: nn.Module, config: AdaLoRAConfig) -> None:
        # the schedule is set per fit (hooks); the injected modules depend only on ranks and targets
        inject_adapter_in_model(cls.peft_config(config, 1000, adapted_layers(backbone, config)), backbone)

    @classmethod
    def hooks(cls, model: nn.Module, config: AdaLoRAConfig, total_steps: int) -> TrainingHooks:
        peft_config = cls.peft_config(config, total_steps, adapted_layers(model.backbone, config))
        allocator = RankAllocator(model, peft_config, ADAPTER)
        factors = [(p, "lora_A" in name) for name, p in model.named_parameters()
                   if p.requires_grad and ("lora_A" in name or "lora_B" in name)]

        def orthogonality() -> Tensor:
            """Mean of ``||A A^T - I||_F`` and ``||B^T B - I||_F`` over every factor, times the weight."""
            total = sum(torch.linalg.matrix_norm((p @ p.T if is_a else p.T @ p).float()
                                                 - torch.eye(p.shape[0] if is_a else p.shape[1], device=p.device))
                        for p, is_a in factors)
            return config.orth_reg_weight * total / len(factors)

        def reallocate(step: int) -> None:
            """peft's schedule: mask to the shrinking budget, fix the final pattern, then hold it."""
            final = peft_config.total_step - peft_config.tfinal
            if step < final:
                _, pattern = allocator.update_and_allocate(model, step)
                if pattern:
                    peft_config.rank_pattern = pattern
            elif step == final:
                if not allocator.ipt:  # a fit of one step scored no rank: the ranks stay as initialised
                    return
                _, peft_config.rank_pattern = allocator.update_and_allocate(model, step, force_mask=True)
                allocator.reset_ipt()
            elif peft_config.rank_pattern:
                allocator.mask_using_rank_pattern(model, peft_config.rank_pattern)

        return TrainingHooks(extra_loss=orthogonality, after_update=reallocate)
