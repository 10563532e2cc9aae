"""Memory and speed prediction for cards the user does not own, and the purchase advisor.

- :mod:`.architecture`: the model's tensors, read from the model transformers builds on the meta device
- :mod:`.arch_cache`: that reading cached as JSON per config, so later predictions import no torch
- :mod:`.weights`: bytes of the loaded weights, bitsandbytes' storage and quantization state included
- :mod:`.kv_cache`: KV-cache bytes per token and the cache's length over a generation, with or without a sliding window
- :mod:`.activations`: short-lived tensors of prefill, a decode step and an encoder forward, stage by stage
- :mod:`.fixed_costs`: CUDA context, cuBLAS workspaces, allocator rounding; the CPU calibration
- :mod:`.memory`: the predicted peak, composed of the terms above (:func:`~.memory.predict_memory`)
- :mod:`.cuda_allocator`: a model of torch's CUDA caching allocator (segments, rounding, best fit, splitting)
- :mod:`.loading`: the loading phase (16-bit tensors quantized on the device) replayed through that model
- :mod:`.user_view`: load then generate without clean-up: the load peak, the fit figure, nvidia-smi's reading
- :mod:`.runtimes`: the library behaviours those replays follow (the installed stack, transformers 4.35)
- :mod:`.capacity`: the largest context and batch that fit a card
- :mod:`.speed`: decode tokens/s from memory bandwidth and measured efficiencies
- :mod:`.claims_adapter`: the predictor as the callable the claims verdicts take
- :mod:`.advisor`: which card fits which model x precision x context, and the cheapest that meets a need
"""
