"""The one-call query decoder (network.query_graph): the traced graph answers what the eager decoder answers, for
any number of points and objects; the reconstructor's fields answer queries through it; where there is none the
reason is given; and it is one call from Python where the eager decoder makes dozens (each a point where the
calling thread gives up the GIL and waits to take it back)."""
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.network.query_graph import LazyQueryGraph, QueryGraph, _Probabilities
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from fixtures_geometry import front_half_sphere, randomize_like_trained

LOCAL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=3,
                    plane_resolution=8, unet_base=8, unet_levels=2)


def local_net(seed=0):
    return randomize_like_trained(OccupancyNetwork(LOCAL), seed, scale=0.3).eval()


@pytest.mark.parametrize("batch,points", [(1, 1), (1, 37), (1, 5000), (3, 200)])
def test_graph_answers_what_the_eager_decoder_answers(batch, points):
    net = local_net()
    graph, why = QueryGraph.build(net)
    assert graph is not None and why == ""
    g = torch.Generator().manual_seed(points)
    code = torch.rand(batch, *net.code_shape, generator=g)
    q = torch.rand(batch, points, 3, generator=g) - 0.5
    prep = net.prepare(code)
    with torch.inference_mode():
        eager = torch.sigmoid(net.decoder(q, code))  # the module's plain forward: the reference
        got = graph(q, prep)
    assert got.shape == (batch, points) and got.dtype == torch.float32
    torch.testing.assert_close(got, eager, atol=2e-6, rtol=0)


def optimized_plans(graph: QueryGraph) -> int:
    """Execution plans TorchScript's executor holds for the graph (none until its profiled first call and the
    optimizing second one); the test is skipped where this torch does not show them."""
    try:
        return len(graph._graph.get_debug_state().execution_plans)
    except RuntimeError:  # the profiling executor asserts when asked before it has optimized
        return 0
    except AttributeError as e:
        pytest.skip(f"this torch shows no executor state: {e}")


def test_a_built_graph_is_optimized_before_its_first_query():
    graph, _ = QueryGraph.build(local_net())
    assert optimized_plans(graph) >= 1
    # the reference: the same decoder traced without the warm-up calls has no plan yet
    net = local_net()
    c = net.config
    planes = torch.rand(1, 3, c.c_dim, c.plane_resolution, c.plane_resolution)
    prep = net.prepare(planes)
    with torch.inference_mode():
        cold = torch.jit.trace(_Probabilities(net.decoder).eval(),
                               (torch.rand(1, 8, 3) - 0.5, planes, prep.fc_c_weight, prep.fc_c_bias), check_trace=False)
    assert optimized_plans(QueryGraph(cold, net)) == 0


def test_no_graph_where_it_cannot_serve_and_why():
    glob = randomize_like_trained(OccupancyNetwork(ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2,
                                                               decoder_hidden=16, decoder_blocks=2)), 0).eval()
    graph, why = QueryGraph.build(glob)
    assert graph is None and "global-code" in why
    training = OccupancyNetwork(LOCAL).train()
    assert QueryGraph.build(training)[0] is None
    lazy = LazyQueryGraph(glob)
    assert lazy.note == "" and lazy.get() is None and "global-code" in lazy.note
    graph, _ = QueryGraph.build(local_net())
    net = graph.model
    code = torch.rand(1, *net.code_shape)
    assert graph.usable(net.prepare(code))
    assert not graph.usable(net.prepare(code, dtype=torch.bfloat16))  # reduced precision: the eager path
    assert not graph.usable(net.prepare(code, fuse=False))


def test_reconstructed_objects_answer_queries_through_the_graph(monkeypatch):
    net = local_net(1)
    rec = Reconstructor(net, device="cpu", config=ReconstructorConfig(resolution0=4, upsampling_steps=1,
                                                                      n_input_points=64))
    obj = rec.reconstruct(front_half_sphere(400, 0), extract_mesh=False)
    assert obj.occupancy.query_graph is rec.query_graph
    c = np.random.default_rng(0).uniform(-0.5, 0.5, (700, 3)).astype(np.float32)
    assert rec.query_graph.get() is not None  # built (traced and warmed up) before the calls are counted
    calls = []
    real = QueryGraph.__call__
    monkeypatch.setattr(QueryGraph, "__call__", lambda self, q, prep: calls.append(q.shape[1]) or real(self, q, prep))
    got = obj.occupancy.network_probabilities(c, float32=True)
    assert calls == [700]
    calls.clear()
    mise_path = obj.occupancy.network_probabilities(c)  # the reconstruction's own decodes stay eager
    assert calls == []
    np.testing.assert_allclose(got, mise_path, atol=2e-6)
    q = obj.query(obj.frame.from_canonical(c))
    assert calls and sum(calls) == int((np.abs(c) <= 0.55).all(axis=1).sum())


class _CountTorchCalls(TorchFunctionMode):
    """Counts the torch calls made from Python: each releases the GIL and takes it back."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_graph_decodes_in_one_call_where_the_eager_decoder_makes_dozens():
    """The point of the graph: one call from Python per decode, so one wait for the GIL where another thread runs
    Python, against one per torch call of the eager decoder (how long those waits are is the benchmark's business)."""
    net = local_net(2)
    graph, _ = QueryGraph.build(net)
    prep = net.prepare(torch.rand(1, *net.code_shape))
    q = torch.rand(1, 300, 3) - 0.5
    with torch.inference_mode():
        with _CountTorchCalls() as eager:
            net.decode_prepared(q, prep)
        with _CountTorchCalls() as traced:
            graph(q, prep)
    assert eager.calls >= 20 and traced.calls <= 1, (eager.calls, traced.calls)
