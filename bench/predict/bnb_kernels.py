"""Which 4-bit matmul bitsandbytes runs for a linear layer, and what it allocates while it runs.

Read from the bitsandbytes 0.50.2 source (:data:`READ_FROM`); the CPU paths are checked against torch's
allocation record in the tests, the CUDA rule is not confirmed on a GPU yet.

CPU (``nn/modules.py`` ``Linear4bit.forward``, ``functional._convert_weight_packed_for_cpu``,
``backends/cpu/ops.py``): where ``has_avx512bf16()`` holds and the layer's ``support_avx512bf16_for_cpu`` is on (its
default), the first forward in eval mode without grad repacks the weight: the nibbles are reordered (same bytes),
absmax becomes bfloat16 and a double-quantized absmax is de-nested (the 8-bit absmax, its float32 absmax and its
code are dropped; the offset stays). Every row count then runs the fused ``gemv_4bit``: the input is cast to
bfloat16, the output comes out in bfloat16 and is cast back to the compute dtype. Elsewhere ``gemm_4bit``'s default
implementation dequantizes the whole weight (after a float32 absmax for double quantization) and calls linear.

CUDA (``backends/cuda/ops.py``): ``gemm_4bit`` runs its fused kernel (output only) for up to
:data:`CUDA_FUSED_FLOOR_ROWS` rows always, never above :data:`CUDA_FUSED_MAX_ROWS` rows or when the inner
dimension is not a multiple of the block size, and in between by ``_gemm_4bit_use_custom_cuda``: a rule of the
GPU's architecture, dtype, shape and SM count, transcribed in :func:`cuda_fused`. Above it, the weight is
dequantized whole (a float32 absmax and its offset-added copy first, for double quantization).
"""

from __future__ import annotations

import math

READ_FROM = "bitsandbytes 0.50.2"
CUDA_FUSED_FLOOR_ROWS = 4  # _GEMM_4BIT_CUSTOM_FLOOR_M
CUDA_FUSED_MAX_ROWS = 1536  # _gemm_4bit_custom_max_m (CUDA; ROCm: 256)
CPU_FUSED_DTYPE_BYTES = 2  # the CPU fused kernel computes in bfloat16


def packed_absmax_bytes(blocks: int) -> int:
    """A repacked layer's absmax: one bfloat16 per block (the CPU AVX512-BF16 path)."""
    return blocks * 2


def cpu_packed_workspace(rows: int, n: int, k: int, act_dtype: str) -> int:
    """Bytes the CPU fused kernel adds beside the layer's output: the input cast to bfloat16 and the bfloat16
    output before its cast back (nothing when the compute dtype is bfloat16 already)."""
    if act_dtype == "bfloat16":
        return 0
    return rows * k * CPU_FUSED_DTYPE_BYTES + rows * n * CPU_FUSED_DTYPE_BYTES


def repack_transient(n: int, k: int) -> int:
    """Peak bytes ``_convert_weight_packed_for_cpu`` holds while it repacks one n x k weight, on the layer's first
    forward (the old packed weight, counted with the weights, aside): every nibble unpacked into an int32 tensor
    (4 B each), cast to uint8 (1 B), made contiguous in the new order (1 B), then the high nibbles shifted
    (0.5 B) and or-ed with the low ones into the new packed weight (0.5 B), all locals alive at once: 7 B per weight.
    The absmax conversion that follows holds less (the int32 tensor still alive, plus about 1/8 B per weight)."""
    return 7 * n * k


def dequantize_workspace(n: int, k: int, act: int, blocksize: int, double_quant: bool, device_kind: str) -> int:
    """Bytes of the dequantizing path beside the layer's output: the whole weight in the compute dtype, plus the
    float32 absmax of a double-quantized weight (CUDA's fallback keeps the dequantized absmax and its
    offset-added copy alive together; the CPU default frees the first at once)."""
    extra = 0
    if double_quant:
        copies = 2 if device_kind == "cuda" else 1
        extra = copies * math.ceil(n * k / blocksize) * 4
    return n * k * act + extra


def _compute_capability(cc: str | None) -> tuple[int, int] | None:
    if not cc:
        return None
    major, _, minor = cc.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return None


def cuda_fused(
    rows: int,
    n: int,
    k: int,
    act_dtype: str,
    compute_capability: str | None,
    sm_count: int | None,
    blocksize: int = 64,
) -> bool | None:
    """True when bitsandbytes 0.50.2 runs its fused 4-bit kernel for ``rows`` x ``k`` times a ``n`` x ``k`` weight on
    a CUDA GPU, False when it dequantizes the weight; None when the rule needs what is unknown (the compute
    capability, or the SM count for 5 to 1536 rows on most architectures).

    ``gemm_4bit``'s dispatch and ``_gemm_4bit_use_custom_cuda``, branch for branch (``M`` = rows, ``N`` = n,
    ``K`` = k)."""
    m, big_n, big_k = rows, n, k
    if m > CUDA_FUSED_MAX_ROWS or big_k % blocksize != 0:
        return False
    if m <= CUDA_FUSED_FLOOR_ROWS:
        return True
    cc = _compute_capability(compute_capability)
    if cc is None:
        return None
    major, minor = cc
    fp32 = act_dtype == "float32"
    if fp32 or major < 7:
        return m < 8
    if major == 7 and (minor < 5 or act_dtype != "float16"):
        return m < 8
    if (major == 8 and minor == 7) or major == 11:
        return False
    if sm_count is None:
        return None
    num_sms = sm_count
    n_blocks = (big_n + 63) // 64
    if major == 10:
        if n_blocks >= num_sms * 3:
            return m <= 32
        if n_blocks >= num_sms:
            return False if big_k >= big_n else m <= 8
        return False
    is_sm75 = major == 7 and minor == 5
    is_sm80 = major == 8 and minor == 0
    is_sm86 = major == 8 and minor == 6
    is_sm90 = major == 9
    is_sm120 = major == 12 and minor == 0
    is_sm121 = major == 12 and minor == 1
    is_hbm = is_sm80 or is_sm90
    tall_k_2xn = big_k > big_n * 2
    if big_n * big_k < 4 * 1024 * 1024:
        if big_k * 2 < big_n:
            if is_hbm:
                low_wave = n_blocks * 3 < num_sms
                if is_sm80:
                    return m <= (1536 if low_wave else 512)
                return m <= (512 if low_wave else 320)
            if is_sm75:
                if n_blocks >= num_sms * 3:
                    return m <= 320
                if big_k >= 1024:
                    return m <= 64
                if big_k >= 704:
                    return m <= 96
                return m <= 320
            if n_blocks >= num_sms:
                return m <= 320
            return m <= 192 if n_blocks * big_k > num_sms * 320 else m <= 320
        quarter_wave = n_blocks * 4 <= num_sms
        if is_sm80 and quarter_wave:
            if big_k >= big_n:
                return m <= (32 if n_blocks * 8 <= num_sms else 128)
            return m <= 384
        if is_sm75 and n_blocks < num_sms and m > 8:
            return m <= 64
        if quarter_wave:
            return m <= (32 if (big_k < big_n or is_hbm) else 23)
        if n_blocks * 2 <= num_sms:
            return m <= 16
        return False
    if m > 512:
        return False
    if m < 8:
        hbm_m67_thresh = 36 if is_sm90 else 48
        if is_hbm and m >= 6 and n_blocks >= hbm_m67_thresh:
            lt_75pct_wave = n_blocks * 4 < num_sms * 3
            lt_60pct_wave = n_blocks * 5 < num_sms * 3
            if big_k > big_n and lt_75pct_wave:
                return False
            if big_k == big_n:
                if is_sm80 and lt_60pct_wave:
                    return False
                if is_sm90 and lt_75pct_wave and not lt_60pct_wave:
                    return False
        return True
    if is_sm75:
        if n_blocks >= num_sms * 3:
            return m <= (128 if big_k < big_n else 64)
        if n_blocks >= num_sms // 2:
            return m <= 64
        return m <= 32
    if is_sm80:
        if n_blocks >= num_sms * 3:
            return m <= 128
        if n_blocks >= num_sms:
            return m <= (64 if big_k < big_n else 32)
        if big_k >= big_n * 3 and n_blocks * 4 > num_sms:
            return False
        if big_k == big_n and n_blocks >= 48 and n_blocks * 5 < num_sms * 3:
            return False
        if n_blocks * 2 < num_sms:
            if big_k <= big_n:
                return m <= 128
            if n_blocks * 3 >= num_sms:
                return False
        if n_blocks >= num_sms // 2 and big_k < big_n:
            return m <= 128
        return m <= 16
    if is_sm86:
        if n_blocks >= num_sms:
            return m <= 128
        if n_blocks >= num_sms // 2:
            return m <= 64
        return m <= 16
    if is_sm90:
        if n_blocks >= num_sms * 3:
            return m <= 64
        if n_blocks >= num_sms * 2:
            return m <= 48
        if n_blocks >= num_sms:
            return m <= 32
        if n_blocks >= num_sms // 2:
            if big_k >= big_n and n_blocks * 4 < num_sms * 3:
                return False
            return m <= 16
        return False
    if is_sm121 and n_blocks >= num_sms:
        return m <= 256
    if is_sm120:
        if n_blocks >= num_sms * 3:
            return m <= 256
        if n_blocks >= num_sms * 2:
            return m <= 128
        if n_blocks * 5 >= num_sms * 4:
            return m <= (96 if big_k >= big_n else 64)
        if n_blocks >= num_sms:
            return m <= 64
        if n_blocks >= num_sms // 2:
            return m <= (64 if (big_k * 2 >= big_n and n_blocks >= 128) else 8)
        if tall_k_2xn and n_blocks > 64:
            return m <= 16
        return m <= 8
    if n_blocks >= num_sms * 3:
        return m <= 256
    if n_blocks >= num_sms * 2:
        return m <= 128
    if n_blocks * 5 >= num_sms * 4:
        if tall_k_2xn or n_blocks >= 200:
            return m <= 128
        if big_k >= big_n:
            return m <= (128 if num_sms >= 60 else 32)
        return m <= 64
    if n_blocks >= num_sms // 2:
        if tall_k_2xn:
            return m <= 64
        if n_blocks >= 64:
            return m <= 8
        return m <= 32
    if big_k > big_n and n_blocks <= 48:
        return m <= (12 if big_k >= big_n * 3 else 10)
    return m <= (16 if (tall_k_2xn or n_blocks < 48) else 8)
