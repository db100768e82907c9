"""Occupancy probabilities of a feature-plane network in one call that releases the GIL once (pure torch, no ROS).

Why: the node answers ``query_occupancy`` in one thread while other threads of its process (the reconstruction
worker, the compute threads) run Python. The eager decoder is some 40 torch calls per object; each releases the
GIL and must take it back, and while any other thread runs Python the taking back waits up to the interpreter's
switch interval. A 10k-point query over 4 objects made about 150-400 such waits while a frame was reconstructed:
traced in the node (``occnet_bench --sections ros``, 1476 calls), the slowest calls spent 7-14 ms on the CPU and
30-140 ms off it, with the kernel's run-queue wait under 12 ms. The same decoder traced into one TorchScript graph
is one call: 300 points beside a thread spinning in Python took 44-156 ms eager against 3-7 ms traced at a 1 ms
switch interval (2-core AMD EPYC).

:class:`QueryGraph` traces :meth:`LocalDecoder._forward_fused <occnet_ros.network.model_local.LocalDecoder._forward_fused>`
and the sigmoid with the prepared planes as inputs (so one graph serves every object), in float32 on the CPU; the
answers are the eager decoder's (tested). ``torch.jit.trace`` is deprecated in favour of ``torch.compile`` and
``torch.export``, which do not give a single GIL-free call; :meth:`QueryGraph.build` returns None and the reason
where it is missing or fails, and the caller says so (the node's start-up line).
"""
from __future__ import annotations

import threading
import warnings

import torch
from torch import nn

from occnet_ros.network.model import OccupancyNetwork
from occnet_ros.network.model_local import LocalDecoder, PreparedPlanes

__all__ = ["LazyQueryGraph", "QueryGraph"]

TRACE_POINTS = 64
"""Query points of the example input the graph is traced with (its shapes stay free: any B and M run)."""

WARM_UP_CALLS = 3
"""Calls :meth:`QueryGraph.build` makes on the example input after tracing. TorchScript's profiling executor
records shapes on a graph's first call and optimizes it on the second, so the first two calls are slow: 2500 query
points took 39.6 ms and 10.9 ms on the first two calls, then 1.9-3.6 ms (the shipped network, one torch thread,
2-core AMD EPYC; ``torch.jit`` debug state: no optimized plan until the second call). In ``reconstruction_node``,
while frames were reconstructed, the first ``query_occupancy`` call (10k points) took 52-144 ms in 13 of 13 starts
without the warm-up and 7.3-9.1 ms in 3 of 3 with it; other point counts reuse the optimized plan.
``occnet_bench --sections ros`` reports the node's first call."""


class _Probabilities(nn.Module):
    """What is traced: query (B, M, 3), planes (B, 3, C, R, R), the stacked feature maps -> probabilities (B, M)."""

    def __init__(self, decoder: LocalDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, query: torch.Tensor, planes: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
                ) -> torch.Tensor:
        prep = PreparedPlanes(code=planes, fc_c_weight=weight, fc_c_bias=bias)
        return torch.sigmoid(self.decoder._forward_fused(query, prep))


class QueryGraph:
    """The traced decoder of one network (see the module docstring); callable from several threads at once."""

    def __init__(self, graph, model: OccupancyNetwork):
        self._graph = graph
        self.model = model

    @classmethod
    def build(cls, model: OccupancyNetwork) -> tuple["QueryGraph | None", str]:
        """-> (the graph, "") for a feature-plane network in eval mode on the CPU, else (None, why not)."""
        if model.config.kind != "local":
            return None, "a global-code network (its fused decoder is used as it is)"
        if model.training:
            return None, "the network is in training mode"
        if model.device.type != "cpu":
            return None, f"the network runs on {model.device.type} (the graph is traced for the CPU)"
        trace = getattr(getattr(torch, "jit", None), "trace", None)
        if trace is None:
            return None, "torch.jit.trace is not in this torch"
        c = model.config
        g = torch.Generator().manual_seed(0)
        planes = torch.rand(1, 3, c.c_dim, c.plane_resolution, c.plane_resolution, generator=g)
        query = torch.rand(1, TRACE_POINTS, 3, generator=g) - 0.5
        prep = model.prepare(planes)
        try:
            with warnings.catch_warnings(), torch.inference_mode():
                warnings.simplefilter("ignore")  # its deprecation notice; the reason is the module docstring
                graph = trace(_Probabilities(model.decoder).eval(), (query, planes, prep.fc_c_weight, prep.fc_c_bias),
                              check_trace=False)
        except Exception as e:  # noqa: BLE001 - any tracing failure means: decode eagerly, and say why
            return None, f"tracing failed: {type(e).__name__}: {e}"
        built = cls(graph, model)
        try:
            for _ in range(WARM_UP_CALLS):  # profiled, then optimized, here rather than in the first queries
                built(query, prep)
        except Exception as e:  # noqa: BLE001 - a graph that traced but does not run is no graph
            return None, f"the traced graph failed to run: {type(e).__name__}: {e}"
        return built, ""

    def usable(self, prep) -> bool:
        """Whether ``prep`` (a prepared code of this graph's network) can be decoded here: float32 planes with the
        stacked feature maps, on the CPU."""
        return (isinstance(prep, PreparedPlanes) and prep.dtype == torch.float32 and prep.fc_c_weight is not None
                and prep.code.device.type == "cpu")

    def __call__(self, query: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """query (B, M, 3) float32 canonical (B as in ``prep``) -> probabilities (B, M) float32."""
        with torch.inference_mode():
            return self._graph(query, prep.code, prep.fc_c_weight, prep.fc_c_bias)


class LazyQueryGraph:
    """A network's :class:`QueryGraph`, traced and warmed up on first use (40-70 ms), once, under a lock; ``note``
    then says why there is none (empty while there is one or nothing was asked yet)."""

    def __init__(self, model: OccupancyNetwork):
        self.model = model
        self._lock = threading.Lock()
        self._built = False
        self._graph: QueryGraph | None = None
        self.note = ""

    def get(self) -> QueryGraph | None:
        """The graph, or None (see :attr:`note`)."""
        if not self._built:
            with self._lock:
                if not self._built:
                    self._graph, self.note = QueryGraph.build(self.model)
                    self._built = True
        return self._graph
