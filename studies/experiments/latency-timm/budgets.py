"""The run's two latency budgets: timm's lcnet_050 and lcnet_075 (10 classes, 64x64 input) timed on
this CPU as `scale --latency-ms --on cpu:1` predicts (1 thread, batch 1, eager, channels_last), 7 interleaved
rounds, median ms. Prints them as JSON, with each timing's IQR and the machine."""
import json

import timm
import torch

from archfamily.latency.timing import machine_info, time_interleaved

cases = {}
for name in ("lcnet_050", "lcnet_075"):
    model = timm.create_model(name, num_classes=10).eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    cases[name] = (lambda m, x: lambda: m(x))(model, x)
timings = time_interleaved(cases, torch.device("cpu"), threads=1, rounds=7)  # a busy window: an error
print(json.dumps({**{k: round(t.median_ms, 4) for k, t in timings.items()},
                  "iqr_ms": {k: round(t.iqr_ms, 4) for k, t in timings.items()}, "machine": machine_info()}, indent=1))
