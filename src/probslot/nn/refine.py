"""The authors' PSA-Proj refinements of the slot means, as one module injected into PSA.

Axis legend (see `probslot.typing`): b batch · k slots · d slot dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from probslot.nn.layers import ResidualMLP
from probslot.validation import check_bool, check_positive_int

__all__ = ["SlotRefinement"]


class SlotRefinement(nn.Module):
    """GRU, residual MLP and slot LayerNorm of the authors' PSA-Proj code (not in the paper).

    `ProbabilisticSlotAttention` calls ``query_input(μ(t))`` before its query projection
    (W_q LayerNorm(μ(t)) when ``norm_slots``) and ``forward(μ_EM, μ(t))`` after each M-step:
    μ(t+1) = GRUCell(μ_EM, μ(t)) when ``gru``, then μ += MLP(LayerNorm(μ)) when ``mlp``.
    σ² and π still come from the EM step (around the EM mean, before the GRU/MLP).

    Args:
        slot_dim: slot size d.
        gru: μ(t+1) = GRUCell(μ_EM, μ(t)).
        mlp: μ += MLP(LayerNorm(μ)) after the GRU.
        norm_slots: the query projection sees LayerNorm(μ(t)). At least one of the three.
        mlp_hidden: hidden width of the residual MLP (default 2·slot_dim).
    """

    def __init__(
        self,
        slot_dim: int,
        gru: bool = False,
        mlp: bool = False,
        norm_slots: bool = False,
        mlp_hidden: int | None = None,
    ) -> None:
        super().__init__()
        d = self.slot_dim = check_positive_int("slot_dim", slot_dim)
        flags = {
            name: check_bool(name, v)
            for name, v in (("gru", gru), ("mlp", mlp), ("norm_slots", norm_slots))
        }
        if not any(flags.values()):
            raise ValueError(
                "SlotRefinement needs at least one of gru, mlp, norm_slots; got none "
                "(pass refine=None for the paper's EM without refinements)"
            )
        if mlp_hidden is not None and not mlp:
            raise ValueError(f"mlp_hidden={mlp_hidden!r} needs mlp=True; got mlp=False")
        # registration order (norm_slots, gru, mlp) as in probslot 0.1.0's PSA
        self.norm_slots: nn.Module = nn.LayerNorm(d) if norm_slots else nn.Identity()
        self.gru: nn.GRUCell | None = nn.GRUCell(d, d) if gru else None
        self.mlp: ResidualMLP | None = None
        if mlp:
            self.mlp = ResidualMLP(
                d, check_positive_int("mlp_hidden", 2 * d if mlp_hidden is None else mlp_hidden)
            )

    def query_input(self, mu: Tensor) -> Tensor:
        """(b, k, d) what the query projection sees: LayerNorm(μ) or μ."""
        return self.norm_slots(mu)

    def forward(self, mu_em: Tensor, mu_prev: Tensor) -> Tensor:
        """(b, k, d) refined means from the M-step's μ_EM and the previous μ(t)."""
        b, k, d = mu_em.shape
        mu = mu_em
        if self.gru is not None:
            mu = self.gru(mu.reshape(b * k, d), mu_prev.reshape(b * k, d)).reshape(
                b, k, d
            )  # (b*k, d) -> (b, k, d)
        if self.mlp is not None:
            mu = self.mlp(mu)
        return mu
