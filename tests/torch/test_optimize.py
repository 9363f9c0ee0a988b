"""``ek.torch.optimize`` on a small CNN (real torch, real Halide builds, the local
evaluator): tuned once per module, then checked against the original module in
eager mode, under torch.compile and torch.export, on inputs it was not tuned for,
after weight updates, and in backward."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import evokernel as ek  # noqa: E402
from evokernel.torch._call import fold  # noqa: E402
from evokernel.torch._layers import find_layers  # noqa: E402
from evokernel.torch._optimize import trace  # noqa: E402

SHAPE = (2, 3, 16, 16)
KINDS = {"conv2d", "linear", "pool2d", "relu", "softmax"}
TUNED = ["conv2d", "conv2d", "conv2d", "pool2d", "pool2d", "relu", "linear", "softmax"]  # the ops one call runs


class SmallCNN(nn.Module):
    """conv+ReLU beside conv+batch norm+ReLU (the same kernel once folded), max
    pooling, a depthwise conv with a functional ReLU, a residual add, a standalone
    ReLU, global average pooling, a linear layer, a softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x):
        y = self.pool(self.relu1(self.conv1(x)) + self.relu2(self.bn(self.conv2(x))))
        z = torch.relu(F.relu(self.dw(y)) + y)
        return self.softmax(self.fc(torch.flatten(self.gap(z), 1)))


class OpLog(TorchDispatchMode):
    """Names of the operators that really run (as the dispatcher sees them)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.name())
        return func(*args, **(kwargs or {}))

    def evokernel(self) -> list[str]:
        return [n for n in self.names if n.startswith("evokernel::")]


def randomize(bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.5)
        bn.running_var.uniform_(0.2, 3)
        if bn.affine:
            bn.weight.normal_(1, 0.5)
            bn.bias.normal_(0, 0.5)


def snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "repr": repr(model),
            "attributes": sorted(vars(model)), "modules": [(n, type(m)) for n, m in model.named_modules()],
            "training": [m.training for m in model.modules()]}


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """The CNN, a snapshot of it before optimizing, and the optimized module
    (2 evaluations for each of its 7 distinct operators); its batch norm has
    statistics and an affine transform far from the identity."""
    torch.manual_seed(0)
    model = SmallCNN().eval()
    randomize(model.bn)
    before = snapshot(model)
    cache = tmp_path_factory.mktemp("torch-cache")
    cache.chmod(0o700)
    fast = ek.torch.optimize(model, torch.randn(SHAPE), budget=14, seed=0, evaluator="local", cache_dir=cache,
                             progress=False)
    return model, before, fast


@pytest.fixture
def x():
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


# -- eager ------------------------------------------------------------------------------

def test_every_layer_runs_on_its_kernel_and_equals_the_original(cnn, x):
    model, _, fast = cnn
    assert set(fast.evokernel.layers) == {"conv1+relu1", "conv2+bn+relu2", "pool", "dw+relu", "relu_1", "gap",
                                          "fc", "softmax"}
    assert fast.evokernel.layers["conv2+bn+relu2"] == fast.evokernel.layers["conv1+relu1"]  # bias=True once folded
    assert not fast.evokernel.failed and not fast.evokernel.pytorch
    with OpLog() as log:
        y = fast(x)
    assert sorted(log.evokernel()) == sorted(f"evokernel::{k}" for k in TUNED)
    assert not any(n.startswith(("aten::convolution", "aten::max_pool", "aten::_softmax")) or "batch_norm" in n
                   for n in log.names)
    assert_close(y, model(x))


def test_forward_with_gradients_enabled_works_and_backward_names_the_layer(cnn, x):
    model, _, fast = cnn
    assert all(p.requires_grad for p in fast.parameters())
    y = fast(x)
    assert_close(y.detach(), model(x).detach())
    with pytest.raises(ek.NoGradientError, match="layer 'softmax' runs on an evokernel kernel.*no gradient"):
        y.sum().backward()


@pytest.mark.parametrize("change", ["shape", "non-contiguous", "channels_last"])
def test_an_input_it_was_not_tuned_for_runs_pytorchs_layers(cnn, x, change):
    model, _, fast = cnn
    other = {"shape": lambda: torch.randn(1, 3, 20, 20),
             "non-contiguous": lambda: x.transpose(2, 3).contiguous().transpose(2, 3),
             "channels_last": lambda: x.to(memory_format=torch.channels_last)}[change]()
    with OpLog() as log:
        y = fast(other)
    assert_close(y, model(other))
    if change == "shape":  # every layer sees another shape
        assert log.evokernel() == []
    elif change == "non-contiguous":  # the first convs see the strided input; their output is contiguous again
        assert sorted(log.evokernel()) == sorted(f"evokernel::{k}" for k in
                                                 ["conv2d", "pool2d", "pool2d", "relu", "linear", "softmax"])
    else:  # PyTorch's layers keep channels-last strides until the global pooling
        assert log.evokernel() == ["evokernel::linear", "evokernel::softmax"]


def test_another_dtype_runs_pytorchs_layers(cnn, x):
    model, fast = copy.deepcopy(cnn[0]), copy.deepcopy(cnn[2])
    model.double(), fast.double()
    with OpLog() as log:
        y = fast(x.double())
    assert log.evokernel() == []
    assert_close(y, model(x.double()))


def test_a_tensor_on_another_device_runs_pytorchs_layer(cnn):
    _, _, fast = cnn
    for call in (fast.evokernel.pool, fast.evokernel.relu_1, fast.evokernel.softmax):
        elsewhere = torch.empty(call.input_shape, device="meta")
        with OpLog() as log:
            y = call(elsewhere)
        assert y.device.type == "meta" and log.evokernel() == []


def test_a_weight_updated_in_place_changes_the_output_as_in_the_original(cnn, x):
    model, fast = copy.deepcopy((cnn[0], cnn[2]))  # one copy: they still share their layers
    before = fast(x)
    with torch.no_grad():
        model.conv1.weight.mul_(-1.5)
        model.fc.bias.add_(0.5)
    after = fast(x)
    assert not torch.allclose(before, after)
    assert_close(after, model(x))


def test_a_weight_in_another_layout_is_copied_once_per_version(cnn, x):
    model, fast = copy.deepcopy((cnn[0], cnn[2]))
    weight = model.fc.weight.detach()
    model.fc.weight = nn.Parameter(weight.t().contiguous().t())  # same values, column-major
    assert not model.fc.weight.is_contiguous()
    slot = fast.evokernel.fc._slot
    with OpLog() as log:
        assert_close(fast(x), model(x))
    assert "evokernel::linear" in log.evokernel()
    copied = slot.copies[1][2]
    fast(x)
    assert slot.copies[1][2] is copied  # not redone on every call
    with torch.no_grad():
        model.fc.weight.mul_(2)
    assert_close(fast(x), model(x))
    assert slot.copies[1][2] is not copied  # redone after the update


def test_the_folded_batch_norm_is_refolded_only_after_a_change(cnn, x):
    model, fast = copy.deepcopy((cnn[0], cnn[2]))
    call = fast.evokernel.conv2_bn_relu2
    with torch.no_grad():
        before = fast(x)
        folded = call._folded[2]
        fast(x)
        assert call._folded[2] is folded  # not redone on every call
        model.bn.running_var.mul_(4)
        with OpLog() as log:
            after = fast(x)
        assert log.evokernel().count("evokernel::conv2d") == 3 and call._folded[2] is not folded
        assert not torch.allclose(before, after)
        assert_close(after, model(x))
        model.conv2.weight.mul_(-1)
        assert_close(fast(x), model(x))


def test_a_batch_norm_put_in_training_mode_runs_the_original_layers(cnn, x):
    model, fast = copy.deepcopy((cnn[0], cnn[2]))
    model.train()  # the optimized module shares the batch norm
    with torch.no_grad(), OpLog() as log:
        y = fast(x)
    assert log.evokernel().count("evokernel::conv2d") == 2 and any("batch_norm" in n for n in log.names)
    with torch.no_grad():
        assert_close(y, model(x))
        model.eval()  # folded again, with the statistics the training-mode calls updated
        assert_close(fast(x), model(x))


@pytest.mark.parametrize("affine, bias", [(False, False), (True, True)])
def test_folding_equals_the_conv_then_the_batch_norm(affine, bias):
    conv, bn = nn.Conv2d(4, 6, 3, bias=bias, groups=2), nn.BatchNorm2d(6, affine=affine).eval()
    randomize(bn)
    x = torch.randn(2, 4, 8, 8)
    weight, shift = fold(conv.weight, conv.bias, bn)
    with torch.no_grad():
        assert_close(F.conv2d(x, weight, shift, groups=2), bn(conv(x)))


def test_the_users_module_is_unchanged(cnn, x):
    model, before, fast = cnn
    after = snapshot(model)
    assert after["repr"] == before["repr"] and after["attributes"] == before["attributes"]
    assert after["modules"] == before["modules"] and after["training"] == before["training"]
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert not hasattr(model, "evokernel") and "forward" not in vars(model)
    assert fast is not model and fast.state_dict().keys() == model.state_dict().keys()


# -- the registered ops, torch.compile and torch.export -------------------------------------

def test_opcheck_passes_on_every_op(cnn):
    _, _, fast = cnn
    seen = set()
    for call in fast.evokernel.children():
        args = call.arguments(torch.randn(call.input_shape), tuple(t.detach() for t in call.weights()))
        results = torch.library.opcheck(call._op, args)
        assert set(results.values()) == {"SUCCESS"}, (call.layer_name, results)
        seen.add(call.kind)
    assert seen == KINDS


def test_torch_compile_traces_the_ops_into_its_graph(cnn, x):
    model, _, fast = cnn
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(fast, backend=recording_backend, fullgraph=True)  # no graph break
    with torch.no_grad():
        assert_close(compiled(x), model(x))
        assert_close(compiled(torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))),
                     model(torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(2))))
    tuned, other = ([str(n.target) for n in g.graph.nodes if n.op == "call_function"] for g in graphs)
    assert sorted(t for t in tuned if t.startswith("evokernel.")) == sorted(f"evokernel.{k}.default" for k in TUNED)
    assert not any(t.startswith("evokernel.") for t in other)  # recompiled for the other shape: PyTorch's layers


def test_torch_compile_with_inductor_equals_the_original(cnn, x):
    """Inductor's compile is the costly part (several seconds on two cores)."""
    model, _, fast = cnn
    torch._dynamo.reset()
    compiled = torch.compile(fast)
    with torch.no_grad(), OpLog() as log:
        y = compiled(x)
    assert_close(y, model(x))
    assert len(log.evokernel()) == len(TUNED)


def test_a_compiled_module_also_refuses_backward(cnn, x):
    _, _, fast = cnn
    torch._dynamo.reset()
    compiled = torch.compile(fast, backend="aot_eager")
    with pytest.raises(ek.NoGradientError, match="no gradient"):
        compiled(x).sum().backward()


def test_torch_export_keeps_the_ops(cnn, x):
    model, _, fast = cnn
    exported = torch.export.export(fast, (x,))
    ops = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert sum(t.startswith("evokernel.") for t in ops) == len(TUNED)
    assert_close(exported.module()(x), model(x))


# -- which layers map, without tuning ---------------------------------------------------------

def mapped(module: nn.Module, *inputs) -> tuple[dict, dict]:
    layers, skipped = find_layers(trace(module, inputs))
    return {layer.name: layer.operator.key for layer in layers}, skipped


def test_an_activation_is_fused_only_into_the_conv_whose_output_it_alone_reads():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU6()

        def forward(self, x):
            y = self.conv(x)
            return self.act(y) + y

    layers, _ = mapped(TwoReaders(), torch.randn(1, 4, 8, 8))
    assert set(layers) == {"conv", "act"} and "activation=None" in layers["conv"]
    fused, _ = mapped(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU6()), torch.randn(1, 4, 8, 8))
    assert set(fused) == {"0+1"} and "activation=relu6" in fused["0+1"]


class Block(nn.Module):
    """A residual network's block as torchvision writes it: the shortcut's conv and
    batch norm come after the second conv, then ``out += identity`` and a ReLU
    module called twice."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.down, self.down_bn = nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += self.down_bn(self.down(x))
        return self.relu(out)


def test_a_residual_add_and_its_relu_join_the_conv_before_them(tmp_path):
    """One kernel per conv, the shortcut's add and the last ReLU inside the second
    conv's: equal to the block in eager mode and under torch.compile, with
    PyTorch's layers for a residual in another layout; its op passes opcheck."""
    torch.manual_seed(0)
    model = Block().eval()
    for bn in (model.bn1, model.bn2, model.down_bn):
        randomize(bn)
    x = torch.randn(1, 4, 10, 10)
    layers, _ = mapped(model, x)
    assert set(layers) == {"conv1+bn1+relu", "conv2+bn2+add+relu", "down+down_bn"}
    assert "residual=True" in layers["conv2+bn2+add+relu"] and "residual" not in layers["down+down_bn"]
    tmp_path.chmod(0o700)
    fast = ek.torch.optimize(model, x, budget=6, seed=0, evaluator="local", cache_dir=tmp_path, progress=False)
    with torch.inference_mode(), OpLog() as log:
        y = fast(x)
    assert log.evokernel() == ["evokernel::conv2d"] * 3 and not {"aten::add_.Tensor", "aten::relu"} & set(log.names)
    with torch.inference_mode():
        assert_close(y, model(x))
        assert_close(torch.compile(fast, backend="eager")(x), model(x))
    call = next(c for c in fast.evokernel.children() if c.layer_name == "conv2+bn2+add+relu")
    shortcut, inp = torch.randn(call._slot.output_shape), torch.randn(call.input_shape)
    with torch.inference_mode(), OpLog() as log:
        fallback = call(inp, shortcut.to(memory_format=torch.channels_last))
    assert not log.evokernel()
    with torch.inference_mode():
        assert_close(fallback, call(inp, shortcut))
    args = call.arguments(torch.randn(call.input_shape), tuple(t.detach() for t in call.weights()), shortcut)
    assert set(torch.library.opcheck(call._op, args).values()) == {"SUCCESS"}


def test_a_1x1_conv_with_its_batch_norm_runs_as_a_matrix_product(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(6, 5, 1, bias=False), nn.BatchNorm2d(5), nn.ReLU()).eval()
    randomize(model[1])
    x = torch.randn(1, 6, 7, 9)
    layers, _ = mapped(model, x)
    assert layers == {"0+1+2": "conv1x1(n=1,c_in=6,c_out=5,positions=63,bias=True,activation=relu,dtype=float32)"}
    tmp_path.chmod(0o700)
    fast = ek.torch.optimize(model, x, budget=3, seed=0, evaluator="local", cache_dir=tmp_path, progress=False)
    with torch.inference_mode(), OpLog() as log:
        y = fast(x)
    assert log.evokernel() == ["evokernel::conv2d"]
    assert_close(y, model(x))


def test_only_an_eval_mode_batch_norm_that_alone_reads_a_conv_is_folded():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(4, 4, 3, bias=False), nn.BatchNorm2d(4).eval()

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    x, conv = torch.randn(1, 4, 8, 8), lambda: nn.Conv2d(4, 4, 3, bias=False)
    folded, _ = mapped(nn.Sequential(conv(), nn.BatchNorm2d(4, affine=False), nn.ReLU6()).eval(), x)
    assert set(folded) == {"0+1+2"} and "bias=True,activation=relu6" in folded["0+1+2"]
    training, skipped = mapped(nn.Sequential(conv(), nn.BatchNorm2d(4), nn.ReLU()).train(), x)
    assert set(training) == {"0", "2"} and "bias=False,activation=None" in training["0"]
    assert "training mode" in skipped["1"]
    _, skipped = mapped(nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval(), x)
    assert "without running statistics" in skipped["1"]
    layers, skipped = mapped(TwoReaders(), x)
    assert set(layers) == {"conv"} and "alone reads" in skipped["bn"]


def test_layers_a_kernel_cannot_compute_exactly_stay_pytorchs():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.reflect = nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")
            self.ceil = nn.AvgPool2d(3, ceil_mode=True)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(x), self.ceil(self.reflect(x)).softmax(dim=1)

    layers, skipped = mapped(Odd(), torch.randn(1, 4, 8, 8))
    assert layers == {}
    assert "padding_mode='reflect'" in skipped["reflect"] and "ceil mode" in skipped["ceil"]
    assert "in-place" in skipped["relu"] and "dim=1" in skipped["softmax"]


# -- bad arguments ---------------------------------------------------------------------------

@pytest.mark.parametrize("model, example, target, error, message", [
    ("not a module", torch.ones(1), "host", ek.ArgumentError, "model must be a torch.nn.Module, got str"),
    (nn.ReLU(), [1.0], "host", ek.ArgumentError, r"example_input\[0\] must be a torch.Tensor"),
    (nn.ReLU(), "x", "host", ek.ArgumentError, "example_input must be a torch.Tensor"),
    (nn.ReLU(), torch.ones(4), "cuda-nonsense", ek.TargetError, "unknown or malformed target 'cuda-nonsense'"),
    (nn.ReLU(), torch.ones(4), "x86-64-linux-cuda", ek.TargetError, "offloads to cuda"),
    (nn.ReLU(), torch.ones(4), "arm-64-linux", ek.TargetError, "compiles for arm-64-linux"),
    (nn.Tanh(), torch.ones(4), "host", ek.ModelError, "no layer of the model is one evokernel computes"),
    (nn.Linear(4, 2), torch.ones(3), "host", ek.ModelError, "does not run on the example input"),
])
def test_bad_arguments_name_the_problem(model, example, target, error, message):
    with pytest.raises(error, match=message):
        ek.torch.optimize(model, example, budget=2, target=target, evaluator="local", progress=False)


def test_a_model_fx_cannot_trace_is_a_model_error():
    class Branchy(nn.Module):
        def forward(self, x):
            return x.relu() if x.sum() > 0 else x

    with pytest.raises(ek.ModelError, match="cannot be traced by torch.fx"):
        ek.torch.optimize(Branchy(), torch.ones(4), budget=2, evaluator="local", progress=False)


def test_importing_evokernel_does_not_import_torch():
    code = "import sys, evokernel as ek; assert 'torch' not in sys.modules; ek.torch; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_an_op_called_directly_on_a_wrong_tensor_says_so(cnn):
    _, _, fast = cnn
    with pytest.raises(ek.KernelCallError, match="layer 'softmax'.*CPU float32 tensor of 20 elements.*float64"):
        torch.ops.evokernel.softmax(torch.ones(2, 10, dtype=torch.float64), fast.evokernel.softmax.slot_name)
    with pytest.raises(ek.KernelCallError, match="no evokernel layer 'gone#0' is alive"):
        torch.ops.evokernel.relu(torch.ones(3), "gone#0")
