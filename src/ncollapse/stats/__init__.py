"""Streaming, mergeable per-class statistics of features: the one state every NC metric reads.

Three accumulators share one state contract (``_Accumulator``): ``update`` folds in a batch with batched
tensor ops, ``merge`` folds in another accumulator (shape and dtype checked), ``all_reduce`` combines the
ranks of ``torch.distributed`` sending only tensors on the state's device, ``reset`` zeroes the state,
``to(device)`` moves it, ``state_dict``/``load_state_dict`` persist it, and ``finalize`` returns a float64
CPU snapshot or raises a clear error when nothing was accumulated.

``ClassStats`` keeps, per class k, the count n_k, the running mean μ_k and the squared deviation
Σ_i ‖h_i − μ_k‖², plus the pooled centred scatter Σ_k Σ_i (h_i − μ_k)(h_i − μ_k)ᵀ (d × d) and, when asked,
one scatter per class (K × d × d). Batches are folded in with the pairwise update of Chan, Golub & LeVeque
(1979) on shifted data (see ``ClassStats.update``), so no raw second moment is ever subtracted.

``NCCCounts`` is the second pass: given finalized class means (and optionally W, b) it counts, per class,
nearest-class-center hits and agreement with the linear classifier (NC4, Papyan et al. 2020); the search
runs over tiles of classes, so its memory is O(batch · tile) for any K.

``NCMCStats`` streams the NCMC collapse statistics (Yan et al. 2024).
"""

from .classes import ClassStats, FinalStats
from .ncc import NCCCounts
from .ncmc import NCMCStats

__all__ = ["ClassStats", "FinalStats", "NCCCounts", "NCMCStats"]
