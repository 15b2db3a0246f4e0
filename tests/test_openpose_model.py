import pytest
import torch

from pose.models.openpose import LightweightOpenPose


@pytest.mark.parametrize("stages, params, entries", [(0, 2_483_065, 162), (1, 4_091_698, 250), (3, 7_308_964, 426)])
def test_parameter_counts_and_state_dict_entries(stages, params, entries):
    net = LightweightOpenPose(num_refinement_stages=stages)
    assert sum(p.numel() for p in net.parameters()) == params
    assert len(net.state_dict()) == entries


def test_lwop_key_layout():
    sd = LightweightOpenPose().state_dict()
    expected = {
        "model.0.0.weight": (32, 3, 3, 3),
        "model.0.1.running_var": (32,),
        "model.7.0.weight": (512, 1, 3, 3),
        "model.11.3.weight": (512, 512, 1, 1),
        "cpm.align.0.weight": (128, 512, 1, 1),
        "cpm.trunk.2.2.weight": (128, 128, 1, 1),
        "cpm.conv.0.bias": (128,),
        "initial_stage.trunk.2.0.weight": (128, 128, 3, 3),
        "initial_stage.heatmaps.1.0.weight": (19, 512, 1, 1),
        "initial_stage.pafs.1.0.bias": (38,),
        "refinement_stages.0.trunk.0.initial.0.weight": (128, 185, 1, 1),
        "refinement_stages.0.trunk.4.trunk.1.1.num_batches_tracked": (),
        "refinement_stages.0.heatmaps.1.0.weight": (19, 128, 1, 1),
        "refinement_stages.0.pafs.0.0.weight": (128, 128, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "model.0.0.bias" not in sd and "cpm.trunk.0.0.bias" not in sd
    assert not any(k.startswith("module.") for k in sd)
    conv7 = LightweightOpenPose().model[7][0]
    assert conv7.dilation == (2, 2) and conv7.padding == (2, 2)


def test_forward_returns_heatmap_paf_pairs_per_stage():
    torch.manual_seed(0)
    net = LightweightOpenPose(num_refinement_stages=2).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 64, 96))
    assert [tuple(t.shape) for t in out] == [(1, 19, 8, 12), (1, 38, 8, 12)] * 3
    assert not torch.equal(out[0], out[2])
