"""The agile demo (`python3 -m agile_torch.demo`, what scripts/demo runs), kept apart from the
library: story.py tells it (GPU with PyTorch, else the host backend with the C client),
gpu.py holds its Triton parts, fft_host.py the host backend's FFT step."""
