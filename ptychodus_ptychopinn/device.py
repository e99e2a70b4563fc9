"""Device discovery and choice: a device torch cannot see is an error, never a fallback."""

from __future__ import annotations

import re

import torch

from .errors import DeviceError

_DEVICE_NAME = re.compile(r'cpu|cuda:\d+|mps')


def available_devices() -> list[str]:
    """Every device torch can use here, CPU first."""
    devices = ['cpu']
    if torch.cuda.is_available():
        devices += [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, 'mps', None)
    if mps is not None and mps.is_available():
        devices.append('mps')
    return devices


def auto_device() -> str:
    """What ``auto`` chooses: the first CUDA GPU, else MPS, else the CPU."""
    devices = available_devices()
    for prefix in ('cuda', 'mps'):
        for device in devices:
            if device.startswith(prefix):
                return device
    return 'cpu'


def describe_device(name: str) -> str:
    if name.startswith('cuda'):
        index = torch.device(name).index or 0
        props = torch.cuda.get_device_properties(index)
        return f'{name}: {props.name}, {props.total_memory / 2**30:.1f} GiB'
    if name == 'mps':
        return 'mps: Apple Metal'
    return f'cpu: {torch.get_num_threads()} threads'


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` (= ``cuda:0``), ``cuda:N`` or ``mps`` -> a usable device."""
    text = name.strip().casefold()
    if text == 'auto':
        return torch.device(auto_device())
    if text == 'cuda':
        text = 'cuda:0'
    devices = available_devices()
    listing = (
        'choose one of: auto, ' + ', '.join(devices) + ' (run `ptychodus-ptychopinn devices` to '
        'list them; in ptychodus the setting is [PINN] Device).'
    )
    if not _DEVICE_NAME.fullmatch(text):
        raise DeviceError(
            f'{name!r} is not a device name (auto, cpu, cuda, cuda:N or mps) and is not '
            f'available here; {listing}'
        )
    if text not in devices:
        reason = ''
        if text.startswith('cuda') and not torch.cuda.is_available():
            if torch.version.cuda is None:
                reason = f' (torch {torch.__version__} is built without CUDA; install a CUDA build)'
            else:
                reason = ' (torch sees no CUDA GPU; check the driver and CUDA_VISIBLE_DEVICES)'
        raise DeviceError(f'device {name!r} is not available here{reason}; {listing}')
    return torch.device(text)


def release_memory(device: torch.device) -> None:
    """Hand cached accelerator memory back to the driver after a run."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    elif device.type == 'mps':
        torch.mps.empty_cache()
