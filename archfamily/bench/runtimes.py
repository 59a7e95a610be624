"""The runtimes the bench times a network in, registered by name in `RUNTIMES`: `eager` PyTorch (or
`torch.compile`d with `compile`), and `onnxruntime`: each network exported once by `archfamily export`'s ONNX
writer and run by ONNX Runtime's CPU provider with the setting's thread count (memory format does not apply to
it: its input is NCHW).

A `Runtime` is its name, the devices it runs on, the Python packages it needs beyond torch, and `prepare(net,
setting)`: the network made ready in one setting, returned as the call to time. Adding one is its `prepare` and
one `register`; `archfamily bench --runtime`, its help and a study plan's `[bench] runtimes` read `RUNTIMES`.

Nothing here imports torch or a runtime at import time: the CLI's help and the plan reader read the names; each
`prepare` imports what it runs on.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from archfamily.errors import UserError
from archfamily.registry import Registry

if TYPE_CHECKING:
    import torch

    from archfamily.bench.select import BenchNet


@dataclass(frozen=True)
class Setting:
    """One setting the bench times every network in."""

    device: "torch.device"
    threads: int
    batch: int
    format: str  # nchw or channels_last
    compile: bool  # `bench --compile`: torch.compile the eager network
    folder: Path  # a scratch folder for the whole bench (exported files)


@dataclass(frozen=True)
class Runtime:
    """A named way of running a network: `prepare(net, setting)` is the call to time."""

    name: str
    prepare: Callable[["BenchNet", Setting], Callable[[], Any]]
    devices: tuple[str, ...] = ("cpu",)  # device types it runs on; on the others it is not timed
    needs: tuple[str, ...] = ()  # Python packages beyond torch, looked for before anything is timed
    install: str = ""  # how to install them

    def missing(self) -> list[str]:
        return [name for name in self.needs if importlib.util.find_spec(name) is None]


RUNTIMES: Registry[Runtime] = Registry("runtime")
register = RUNTIMES.add


def cpu_only() -> tuple[str, ...]:
    """The runtimes that time on the CPU alone."""
    return tuple(name for name, r in RUNTIMES.items() if r.devices == ("cpu",))


def check_runtimes(runtimes: tuple[str, ...]) -> None:
    """One-line errors for an unknown runtime, or one asked for where its packages are not installed."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise UserError(f"unknown runtime {', '.join(unknown) or '(none)'}; choose from {', '.join(RUNTIMES)}")
    for name in runtimes:
        missing = RUNTIMES[name].missing()
        if missing:
            raise UserError(f"--runtime {name} needs {' and '.join(missing)}: {RUNTIMES[name].install}")


def prepare_eager(net: "BenchNet", setting: Setting) -> Callable[[], Any]:
    import torch

    memory_format = torch.channels_last if setting.format == "channels_last" else torch.contiguous_format
    model = net.build().to(setting.device, memory_format=memory_format).eval()
    if setting.compile:
        model = torch.compile(model)
    x = torch.randn(setting.batch, net.spec.in_chans, net.spec.input_size, net.spec.input_size, device=setting.device)
    x = x.contiguous(memory_format=memory_format)
    return lambda: model(x)


def prepare_onnx(net: "BenchNet", setting: Setting) -> Callable[[], Any]:
    """An ONNX Runtime session of `net` (exported once into the setting's folder) on the setting's CPU threads."""
    import onnxruntime
    import torch

    from archfamily.hub.export import write_onnx

    path = setting.folder / f"net-{id(net)}.onnx"
    if not path.is_file():
        write_onnx(net.build(), path, net.spec.input_size, net.spec.in_chans)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = setting.threads, 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = torch.randn(setting.batch, net.spec.in_chans, net.spec.input_size, net.spec.input_size).numpy()
    return lambda: session.run(None, {"images": x})


register(Runtime("eager", prepare_eager, devices=("cpu", "cuda")))
register(Runtime("onnxruntime", prepare_onnx, needs=("onnx", "onnxscript", "onnxruntime"),
                 install='pip install -e ".[onnx]"'))
