"""Default implementation of instruction-query attention pooling: the algebraic PyTorch form.

This is the CPU kernel of the ``inf_embed::iq_attention_pool`` custom op and the fallback on every other device.
It never builds the (B, Lx, d) attended rows of the naive form; it pools the attention weights first::

    S[b, i, j] = scale * <x[b, i], y[k_b, j]>          k_b = y_index[b] (or b); padded y tokens masked
    A[b, i, j] = softmax_j(S[b, i, :])                  fp32 (fp64 for fp64 inputs); 0 unless mx[b, i] and my[b, j]
    w[b, j]    = sum_i c[b, i] A[b, i, j]               c[b, i] = mx[b, i] / n_x[b]   if n_x[b] > 0
               = my[b, j] / max(n_y[b], 1)                                            otherwise (mean of y)
    out[b]     = w[b] @ y[k_b]                          (B, d)

Backward (``g = dL/dout``), reusing the saved ``A``::

    dw[b, j]    = <y[k_b, j], g[b]>
    dS[b, i, j] = c[b, i] A[b, i, j] (dw[b, j] - sum_k A[b, i, k] dw[b, k])
    dx[b]       = scale * dS[b] @ y[k_b]
    dy[k_b]    += w[b]^T g[b] + scale * dS[b]^T @ x[b]

Masks use ``finfo.min`` (never ``-inf``) and edge cases ``torch.where``/fills, so rows with no valid token give
finite values and finite gradients. The only data-dependent choice is the CPU layout for ``y_index`` (see
:class:`_Pairing`), made inside the op body, which ``torch.compile`` treats as opaque.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["acc_dtype", "iq_attention_pool_backward", "iq_attention_pool_forward", "pool_weights"]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype for softmax and pooling weights: fp64 for fp64 inputs, fp32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Pairing:
    """How x row ``b`` meets its y row ``k_b``: the batched products of the forward and backward.

    The layout is chosen once per call, from ``y_index``:

    * ``y_index`` None: ``k_b = b``, plain batched GEMMs;
    * grouped: ``y_index == [0]*m + [1]*m + ... + [By-1]*m`` (each y row shared by m consecutive x rows, e.g. one
      query against m instructions, or By == 1): x is viewed as (By, m*Lx, d), so y is never copied and the y
      gradient is summed inside the GEMM. Detected on CPU only, where the check costs no device sync;
    * otherwise: a transient gather ``y[y_index]`` (B, Ly, d), freed when the call returns (never saved for
      backward), and ``index_add_`` for the y gradient.
    """

    def __init__(self, x_states: Tensor, y_states: Tensor, y_index: Tensor | None) -> None:
        self.x = x_states  # (B, Lx, d)
        self.y = y_states  # (By, Ly, d)
        self.y_index = y_index
        self.group = self._group_size(x_states, y_states, y_index)
        # (B, Ly, d) y row of each x row; for the grouped layout, y itself
        self.y_rows = y_states if y_index is None or self.group else y_states.index_select(0, y_index)

    @staticmethod
    def _group_size(x_states: Tensor, y_states: Tensor, y_index: Tensor | None) -> int:
        if y_index is None or y_index.device.type != "cpu" or not x_states.is_contiguous():
            return 0
        batch, batch_y = y_index.numel(), y_states.shape[0]
        if batch == 0 or batch_y == 0 or batch % batch_y:
            return 0
        group = batch // batch_y
        expected = torch.arange(batch_y, device=y_index.device).repeat_interleave(group)
        return group if torch.equal(y_index, expected) else 0

    def _grouped(self, t: Tensor) -> Tensor:
        """(B, L, n) -> (By, m*L, n) view."""
        return t.reshape(self.y.shape[0], self.group * t.shape[1], t.shape[2])

    def y_mask(self, y_mask: Tensor) -> Tensor:
        """(By, Ly) -> (B, Ly): the y mask of each x row (a small gather)."""
        return y_mask if self.y_index is None else y_mask.index_select(0, self.y_index)

    def scores(self, scale: float) -> Tensor:
        """``scale * x y^T``: (B, Lx, Ly), in the input dtype (BLAS accumulates in fp32, scales before rounding)."""
        x, y = (self._grouped(self.x), self.y) if self.group else (self.x, self.y_rows)
        s = torch.baddbmm(x.new_empty(()), x, y.mT, beta=0.0, alpha=scale)  # (B, Lx, Ly) or (By, m*Lx, Ly)
        return s.view(self.x.shape[0], self.x.shape[1], self.y.shape[1])

    def rows_times_y(self, rows: Tensor) -> Tensor:
        """``rows[b] @ y[k_b]``: (B, n, Ly) -> (B, n, d)."""
        if self.group:
            out = torch.bmm(self._grouped(rows), self.y)  # (By, m*n, d)
            return out.view(rows.shape[0], rows.shape[1], self.y.shape[2])
        return torch.bmm(rows, self.y_rows)

    def rows_times_y_t(self, rows: Tensor) -> Tensor:
        """``rows[b] @ y[k_b]^T``: (B, n, d) -> (B, n, Ly)."""
        if self.group:
            out = torch.bmm(self._grouped(rows), self.y.mT)  # (By, m*n, Ly)
            return out.view(rows.shape[0], rows.shape[1], self.y.shape[1])
        return torch.bmm(rows, self.y_rows.mT)

    def y_grad(self, w: Tensor, g: Tensor, ds: Tensor) -> Tensor:
        """``sum over b with k_b = k of (w[b]^T g[b] + ds[b]^T x[b])``: (By, Ly, d) in the input dtype."""
        if self.group:
            dy = torch.bmm(self._grouped(w.unsqueeze(1)).mT, self._grouped(g.unsqueeze(1)))  # (By, Ly, d)
            return dy.baddbmm_(self._grouped(ds).mT, self._grouped(self.x))
        dy_rows = w.unsqueeze(-1) * g.unsqueeze(1)  # (B, Ly, d): w^T g
        dy_rows.baddbmm_(ds.mT, self.x)  # (B, Ly, d)
        if self.y_index is None:
            return dy_rows
        acc = acc_dtype(self.y.dtype)
        dy = torch.zeros(self.y.shape, dtype=acc, device=self.y.device)
        return dy.index_add_(0, self.y_index, dy_rows.to(acc)).to(self.y.dtype)  # (By, Ly, d)


def pool_weights(attn: Tensor, x_mask: Tensor, my: Tensor) -> tuple[Tensor, Tensor]:
    """Pooling weights over y tokens.

    Args:
        attn: (B, Lx, Ly) attention, accumulation dtype, zero at padded x rows and padded y tokens.
        x_mask: (B, Lx) bool.
        my: (B, Ly) bool, the y mask already paired with the x rows.

    Returns:
        ``(w, c)``: ``w`` (B, Ly) the weights of the y tokens (the x-mean of ``attn``, or the y-mean when the row has
        no valid x token) and ``c`` (B, Lx) the x-pooling coefficients ``mx / max(n_x, 1)``.
    """
    acc = attn.dtype
    mx = x_mask.to(acc)  # (B, Lx)
    n_x = mx.sum(dim=1, keepdim=True)  # (B, 1)
    c = mx / n_x.clamp_min(1.0)  # (B, Lx)
    w_attn = torch.bmm(c.unsqueeze(1), attn).squeeze(1)  # (B, Ly)
    myf = my.to(acc)  # (B, Ly)
    w_mean = myf / myf.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, Ly)
    return torch.where(n_x > 0, w_attn, w_mean), c


def iq_attention_pool_forward(
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """Forward of the algebraic form.

    Args:
        x_states: (B, Lx, d) float.
        x_mask: (B, Lx) bool.
        y_states: (By, Ly, d), same dtype as ``x_states``.
        y_mask: (By, Ly) bool.
        y_index: (B,) int64 in [0, By), or None when By == B.
        scale: logit scale.

    Returns:
        ``(out, attn)``: ``out`` (B, d) in the input dtype, ``attn`` (B, Lx, Ly) in the accumulation dtype (fp32, or
        fp64 for fp64 inputs), the softmax over valid y tokens, zero at padded x rows and padded y tokens.
    """
    with torch.autocast(device_type=x_states.device.type, enabled=False):
        acc = acc_dtype(x_states.dtype)
        pairing = _Pairing(x_states, y_states, y_index)
        my = pairing.y_mask(y_mask)  # (B, Ly)
        s = pairing.scores(scale).to(acc)  # (B, Lx, Ly)
        s.masked_fill_(~my.unsqueeze(1), torch.finfo(acc).min)  # padded y: exp(min - max) == 0 in valid rows
        attn = torch.softmax(s, dim=-1)  # (B, Lx, Ly)
        # zero the rows of padded x tokens and of batch rows without a valid y token (uniform there); a fill, not
        # a product, so a padded x row whose garbage logits overflowed to inf cannot leak NaN
        live_rows = x_mask & my.any(dim=1, keepdim=True)  # (B, Lx)
        attn.masked_fill_(~live_rows.unsqueeze(2), 0.0)
        w, _ = pool_weights(attn, x_mask, my)  # (B, Ly)
        out = pairing.rows_times_y(w.unsqueeze(1).to(x_states.dtype)).squeeze(1)  # (B, d)
    return out, attn


def iq_attention_pool_backward(
    grad: Tensor,
    attn: Tensor,
    x_states: Tensor,
    x_mask: Tensor,
    y_states: Tensor,
    y_mask: Tensor,
    y_index: Tensor | None,
    scale: float,
    need_x_grad: bool,
    need_y_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Hand-written backward of :func:`iq_attention_pool_forward`, reusing its saved ``attn``.

    Args:
        grad: (B, d) gradient of the output.
        attn: (B, Lx, Ly) attention returned by the forward.
        x_states, x_mask, y_states, y_mask, y_index, scale: the forward inputs.
        need_x_grad: compute the gradient of ``x_states``.
        need_y_grad: compute the gradient of ``y_states``.

    Returns:
        ``(x_grad, y_grad)`` of shapes (B, Lx, d) and (By, Ly, d) in the input dtype; a gradient that is not needed
        is an empty tensor of shape (0,).
    """
    with torch.autocast(device_type=x_states.device.type, enabled=False):
        dt = x_states.dtype
        acc = attn.dtype
        pairing = _Pairing(x_states, y_states, y_index)
        my = pairing.y_mask(y_mask)  # (B, Ly)
        g = grad.to(dt)
        w, c = pool_weights(attn, x_mask, my)  # (B, Ly), (B, Lx)
        # row-vector products ((B, 1, K) @ (B, K, N)): the column-vector form is several times slower on CPU
        dw = pairing.rows_times_y_t(g.unsqueeze(1)).squeeze(1).to(acc)  # (B, Ly)
        # padded y tokens have attn == 0, but their dw may overflow (fp16 GEMM output) and 0 * inf is NaN: zero it
        dw.masked_fill_(~my, 0.0)
        adw = torch.bmm(dw.unsqueeze(1), attn.mT).mT  # (B, Lx, 1): sum_k A_ik dw_k
        ds = (dw.unsqueeze(1) - adw).mul_(attn).mul_(c.unsqueeze(-1) * scale).to(dt)  # (B, Lx, Ly): scale * dS

        x_grad = x_states.new_empty(0)
        if need_x_grad:
            x_grad = pairing.rows_times_y(ds)  # (B, Lx, d)
        y_grad = y_states.new_empty(0)
        if need_y_grad:
            y_grad = pairing.y_grad(w.to(dt), g, ds)  # (By, Ly, d)
    return x_grad, y_grad
